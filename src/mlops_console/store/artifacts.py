"""Content-addressed artifact store: `.mlops/objects/ab/cdef...` named by sha256.

Writes go to a temp file in the same folder, are fsynced and renamed into place, so a
reader never sees half an object. Every read re-hashes the bytes; an object whose hash
does not match its name is refused and is never unpickled.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mlops_console.errors import ArtifactIntegrityError, NotFound

CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def path_of(self, digest: str) -> Path:
        if not _HEX64.fullmatch(digest):
            raise NotFound(f"{digest!r} is not a sha256 artifact id (64 hex digits).")
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path_of(digest).exists()

    # --- write ---------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        return self._put_stream(io.BytesIO(data))

    def put_file(self, path: Path | str) -> str:
        with open(path, "rb") as fh:
            return self._put_stream(fh)

    def _put_stream(self, src: BinaryIO) -> str:
        self.tmp.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            final = self.path_of(digest)
            if final.exists():
                os.unlink(tmp_name)  # identical content is already stored
                os.utime(final)  # fresh mtime: gc's grace period protects it again
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp_name, 0o400)  # immutable, and the owner's alone
            os.replace(tmp_name, final)
            _fsync_dir(final.parent)
            return digest
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    # --- read (always verified) ----------------------------------------------------

    def get_bytes(self, digest: str) -> bytes:
        path = self._existing(digest)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise self._mismatch(digest, actual)
        return data

    def verify(self, digest: str) -> Path:
        """Re-hash the object and return its path; raise if it was altered."""
        path = self._existing(digest)
        actual = sha256_file(path)
        if actual != digest:
            raise self._mismatch(digest, actual)
        return path

    def load_pickle(self, digest: str) -> Any:
        """Unpickle a joblib/pickle object, only after its hash checked out."""
        import joblib

        data = self.get_bytes(digest)
        return joblib.load(io.BytesIO(data))

    def export(self, digest: str, dest: Path) -> Path:
        """Copy a verified object to `dest` (atomically)."""
        data = self.get_bytes(digest)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".export-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, dest)
        return dest

    def _existing(self, digest: str) -> Path:
        path = self.path_of(digest)
        if not path.exists():
            raise NotFound(
                f"Artifact {digest[:12]} is missing from {self.root}. It was deleted or the "
                "workspace was copied without .mlops/objects; restore it from a backup."
            )
        return path

    def _mismatch(self, digest: str, actual: str) -> ArtifactIntegrityError:
        return ArtifactIntegrityError(
            f"Artifact {digest[:12]} is corrupt or was tampered with: its content hashes to "
            f"{actual[:12]}. It was not loaded. Restore {self.path_of(digest)} from a backup "
            "or re-create it (re-run the training)."
        )

    # --- listing and removal (used by gc) --------------------------------------------

    def iter_objects(self) -> Iterator[tuple[str, Path]]:
        if not self.root.exists():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.name == "tmp" or not sub.is_dir() or len(sub.name) != 2:
                continue
            for obj in sorted(sub.iterdir()):
                digest = sub.name + obj.name
                if _HEX64.fullmatch(digest):
                    yield digest, obj

    def stale_temp_files(self, older_than: float) -> list[Path]:
        if not self.tmp.exists():
            return []
        cutoff = time.time() - older_than
        return [p for p in self.tmp.iterdir() if p.stat().st_mtime < cutoff]

    def remove(self, digest: str) -> int:
        path = self.path_of(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
