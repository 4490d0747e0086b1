"""A workspace folder whose registry is at an older schema revision, as an older version of
mlops-console left it: for the tests of each migration's upgrade (and downgrade)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlops_console.store.db import Database, alembic_config


def database_at(root: Path, revision: str) -> Database:
    """`root` (created) holds an empty mlops.toml and a registry upgraded to `revision`."""
    from alembic import command

    (root / ".mlops").mkdir(parents=True)
    (root / "mlops.toml").write_text("")
    db = Database(root / ".mlops" / "registry.db")
    with sqlite3.connect(db.path) as con:
        con.execute("PRAGMA journal_mode = WAL")
    cfg = alembic_config()
    with db.sqlalchemy_engine().connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    return db
