"""A workspace folder whose registry is at an older schema revision, as an older version of
mlops-console left it: for the tests of each migration's upgrade (and downgrade)."""

from __future__ import annotations

from pathlib import Path

from mlops_console.store.db import Database


def database_at(root: Path, revision: str) -> Database:
    """`root` (created) holds an empty mlops.toml and a registry upgraded to `revision`,
    the way the workspace migrates itself (Database._upgrade), only stopping earlier."""
    (root / ".mlops").mkdir(parents=True)
    (root / "mlops.toml").write_text("")
    db = Database(root / ".mlops" / "registry.db")
    db._upgrade(revision)
    return db
