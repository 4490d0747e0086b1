"""Errors a user can cause. Each message says what was wrong and what to do."""


class MlopsError(Exception):
    """Base of every error the CLI reports as a plain message (exit code 1)."""


class WorkspaceNotFound(MlopsError):
    pass


class WorkspaceError(MlopsError):
    """The workspace exists but cannot be used as it is (corrupt, too new, ...)."""


class ConfigError(MlopsError):
    pass


class ArtifactIntegrityError(MlopsError):
    """An artifact's bytes do not match its recorded sha256; it is never unpickled."""


class NotFound(MlopsError):
    pass


class Conflict(MlopsError):
    """The operation contradicts the current state (e.g. deleting an aliased version)."""


class InvalidName(MlopsError):
    """A name a user gave (dataset, model, deployment, ...) is not allowed as it is."""


class StorageFull(MlopsError):
    """The disk holding the workspace's state is full."""


class StorageReadOnly(MlopsError):
    """The workspace's state cannot be written by this user or on this file system."""


class GcRefused(MlopsError):
    """`mlops gc` would remove most of the store: the registry may not be the right one."""


# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF)
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_FULL = 8, 10, 14, 13


def storage_error(exc: BaseException, where) -> MlopsError | None:
    """The one-sentence error for a full or read-only disk behind `exc` (an OSError, or an
    SQLite error, also wrapped by SQLAlchemy), or None if `exc` is something else.

    `where` is the workspace's `.mlops` folder (a Path): what the sentence names when the
    error itself names no file."""
    import errno
    from pathlib import Path

    where = Path(where) if where else Path.cwd()
    for err in _chain(exc):
        path = Path(getattr(err, "filename", None) or where)
        code = getattr(err, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        number = getattr(err, "errno", None)
        free = _free_bytes(path)
        # SQLite reports a write that found no space as SQLITE_FULL, or (WAL, shm) as an
        # I/O error; with no space left either means the disk is full
        if (
            number in (errno.ENOSPC, errno.EDQUOT)
            or primary == _SQLITE_FULL
            or (primary == _SQLITE_IOERR and free is not None and free < 1 << 20)
        ):
            return StorageFull(
                f"The disk holding {path} is full ({free or 0:,} bytes free); free some "
                "space and run the command again."
            )
        mine = path.is_relative_to(where)  # not a file the user named (an input, say)
        if (
            number == errno.EROFS
            or (number in (errno.EACCES, errno.EPERM) and mine)
            or primary == _SQLITE_READONLY
            or (primary == _SQLITE_CANTOPEN and _on_read_only_fs(path))
        ):
            if number == errno.EROFS or _on_read_only_fs(path):
                return StorageReadOnly(
                    f"{path} is on a read-only file system; remount it read-write (or copy "
                    "the workspace to a writable place) and run the command again."
                )
            return StorageReadOnly(
                f"{path} is read-only for you (user {_user()}); run the command as its "
                "owner or get write access to it, then run it again."
            )
    return None


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError wraps the driver's
        if isinstance(orig, BaseException):
            yield orig
        exc = exc.__cause__ or exc.__context__


def _free_bytes(path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def _existing(path):
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _on_read_only_fs(path) -> bool:
    import os

    try:
        return bool(os.statvfs(_existing(path)).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user() -> str:
    import os

    from mlops_console.users import current_user

    return current_user() or str(os.geteuid())
