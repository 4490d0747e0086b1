"""The metadata database: one SQLite file in WAL mode, shared by many processes.

Why it is safe with several writers (daemon, console, CLI, servers):
- WAL mode: readers never block the writer and the writer never blocks readers.
- Every write transaction starts with ``BEGIN IMMEDIATE``, so it takes the write lock
  up front and waits for it (busy timeout) instead of failing later with
  "database is locked" when a read transaction tries to upgrade.
- Schema migrations run under an exclusive file lock and re-check the schema version
  once they hold it, so two processes opening a new workspace at the same moment
  migrate it exactly once (MLflow's store races here).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_console.errors import WorkspaceError, storage_error
from mlops_console.store.sqlite import Connection, Pool

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

BUSY_TIMEOUT_S = 60.0

# Ordered, append-only list of the Alembic revisions this code knows. A test checks it
# against the migration scripts; keeping it here lets a workspace open without importing
# Alembic when its schema is already current.
REVISIONS: tuple[str, ...] = (
    "0001_foundation",
    "0002_datasets",
    "0003_gates",
    "0004_deployments",
    "0005_jobs",
    "0006_monitoring",
    "0007_job_lease_outcome",
    "0008_schedule_state",
    "0009_integrity",
    "0010_alert_scope",
)
HEAD = REVISIONS[-1]


def _on_connect(dbapi_conn: sqlite3.Connection, _record: object = None) -> None:
    # Autocommit at the driver level: transactions are begun explicitly.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys = ON")
    # In WAL mode NORMAL is corruption-safe; the last commits may be lost on power loss.
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


class Database:
    """Reads and writes go through the plain `sqlite3` module (a small pool in
    store/sqlite.py): SQLAlchemy costs ~130 ms of CPU to import, more than a read-only
    command may take in all. SQLAlchemy and Alembic load only to migrate the schema."""

    def __init__(self, path: Path, holds: tuple[Path, ...] = ()):
        """`holds`: folders whose content only this registry knows about (the artifact
        store, the lake); while any has files, an empty registry is never started here."""
        self.path = Path(path)
        self.holds = tuple(Path(p) for p in holds)
        self._pool = Pool(self._connect)
        self._engine: Engine | None = None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        _on_connect(con)
        return con

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for all its queries."""
        with self._pool.transaction("DEFERRED", commit=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A short write transaction that holds the write lock from its first statement."""
        with self._pool.transaction("IMMEDIATE", commit=True) as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def sqlalchemy_engine(self) -> Engine:
        """An SQLAlchemy engine on the same file, with the same pragmas and explicit
        BEGINs: for Alembic (migrations, and the test that compares the schema)."""
        if self._engine is None:
            from sqlalchemy import create_engine, event

            self._engine = create_engine(
                f"sqlite:///{self.path}",
                connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            )
            event.listen(self._engine, "connect", _on_connect)
            event.listen(
                self._engine,
                "begin",
                lambda conn: conn.exec_driver_sql(
                    f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}"
                ),
            )
        return self._engine

    # --- schema ------------------------------------------------------------------

    def schema_revision(self) -> str | None:
        """The revision the file is at, or None for an empty database.

        Uses the plain sqlite3 module so a corrupt file is reported, not half-opened.
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
                if "alembic_version" not in names:
                    if names and self._held():
                        raise WorkspaceError(
                            f"{self.path} is an SQLite database but not an mlops-console "
                            f"one (it has no schema version) and {self._held_text()}; "
                            f"restore {self.path} from a backup and run the command again "
                            "(nothing was changed)."
                        )
                    if names:
                        raise WorkspaceError(
                            f"{self.path} is an SQLite database but not an mlops-console "
                            "one (it has no schema version). Move it away and reopen the "
                            "workspace to start a fresh registry."
                        )
                    return None
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                return row[0] if row else None
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            full_or_read_only = storage_error(exc, self.path.parent)
            if full_or_read_only is not None:
                raise full_or_read_only from None
            if self._held():
                raise WorkspaceError(
                    f"{self.path} is not a readable SQLite database ({exc}) and "
                    f"{self._held_text()}; restore {self.path} from a backup and run the "
                    "command again (nothing was changed)."
                ) from None
            raise WorkspaceError(
                f"{self.path} is not a readable SQLite database ({exc}). Restore it from a "
                "backup, or (this workspace has no artifacts or snapshots yet) move it away "
                "to start an empty registry; nothing was changed."
            ) from None

    def _held(self) -> dict[Path, int]:
        """Files in the `holds` folders (counted up to 1000 each: enough to say so)."""
        out = {}
        for folder in self.holds:
            n = 0
            for _dirpath, _dirs, files in os.walk(folder):
                n += len(files)
                if n >= 1000:
                    break
            if n:
                out[folder] = n
        return out

    def _held_text(self) -> str:
        held = ", ".join(
            f"{folder} holds {n}{'+' if n >= 1000 else ''} file(s)"
            for folder, n in self._held().items()
        )
        return held + " that only the registry knows about"

    def _refuse_fresh(self) -> None:
        """Starting an empty registry next to stored artifacts would forget every run,
        model and dataset, and `gc` would then delete their bytes: refuse instead."""
        if not self._held():
            return
        if not self.path.exists():
            what = "is missing"
        elif self.path.stat().st_size == 0:
            what = "is empty (0 bytes)"
        else:
            what = "has no tables"
        raise WorkspaceError(
            f"{self.path} {what} but {self._held_text()}, so it is not a new workspace; "
            f"restore {self.path} from a backup (with its -wal file, if there is one) and run "
            "the command again. Nothing was changed; no empty registry was started."
        )

    def ensure_schema(self) -> None:
        """Bring the schema to HEAD, once, even with many processes racing to do it."""
        current = self.schema_revision()
        if current == HEAD:
            return
        self._refuse_unknown(current)
        if current is None:
            self._refuse_fresh()
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.schema_revision()
                if current == HEAD:
                    return
                self._refuse_unknown(current)
                self._upgrade()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _refuse_unknown(self, current: str | None) -> None:
        if current is not None and current not in REVISIONS:
            raise WorkspaceError(
                f"{self.path} was written by a newer mlops-console (schema revision "
                f"{current!r}; this version knows up to {HEAD!r}). Upgrade mlops-console "
                "to open this workspace; nothing was changed."
            )

    def _upgrade(self, revision: str = "head") -> None:
        """Migrate to `revision` (tests build older schemas with it)."""
        from alembic import command

        with sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S) as con:
            con.execute("PRAGMA journal_mode = WAL")
        cfg = alembic_config()
        with self.sqlalchemy_engine().connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            # One transaction for the whole upgrade: SQLite DDL is transactional, so a
            # failed migration leaves the previous schema intact.
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg
