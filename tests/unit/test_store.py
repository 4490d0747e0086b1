import hashlib
import sqlite3

import pytest
from tests.store_revision import database_at

from mlops_console.errors import WorkspaceError
from mlops_console.store.db import HEAD, REVISIONS, Database, alembic_config
from mlops_console.workspace import Workspace


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_revisions_list_matches_the_migration_scripts():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    ordered = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    assert tuple(ordered) == REVISIONS
    assert scripts.get_current_head() == HEAD


def test_migrated_schema_matches_the_table_classes(ws):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from mlops_console.store import tables  # noqa: F401

    with ws.db.sqlalchemy_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_pragmas(ws):
    with ws.db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_newer_schema_is_refused_and_left_unchanged(tmp_path):
    root = tmp_path / "w"
    Workspace.init(root).close()
    db = root / ".mlops" / "registry.db"
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = '0999_from_the_future'")
    con.commit()
    con.close()
    before = digest(db)
    with pytest.raises(WorkspaceError, match="newer mlops-console"):
        Workspace.open(root)
    assert digest(db) == before


def test_corrupt_database_is_refused_and_left_unchanged(tmp_path):
    root = tmp_path / "w"
    Workspace.init(root).close()
    db = root / ".mlops" / "registry.db"
    for extra in ("-wal", "-shm"):
        (db.parent / (db.name + extra)).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    before = digest(db)
    with pytest.raises(WorkspaceError, match="not a readable SQLite database"):
        Workspace.open(root)
    assert digest(db) == before


def test_foreign_sqlite_file_is_refused(tmp_path):
    root = tmp_path / "w"
    (root / ".mlops").mkdir(parents=True)
    (root / "mlops.toml").write_text("")
    con = sqlite3.connect(root / ".mlops" / "registry.db")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    with pytest.raises(WorkspaceError, match="not an mlops-console one"):
        Workspace.open(root)


def test_write_transaction_rolls_back_on_error(ws):
    with pytest.raises(RuntimeError), ws.db.write() as conn:
        conn.exec_driver_sql("INSERT INTO experiment (name, created_at) VALUES ('x', 0)")
        raise RuntimeError("boom")
    with ws.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM experiment").scalar() == 0


def test_ensure_schema_twice_is_a_no_op(tmp_path):
    db = Database(tmp_path / "r.db")
    db.ensure_schema()
    db.ensure_schema()
    assert db.schema_revision() == HEAD
    db.close()


def test_migration_0002_upgrades_a_0001_database_and_keeps_its_data(tmp_path):
    root = tmp_path / "w"
    db = database_at(root, "0001_foundation")
    with db.write() as conn:
        conn.exec_driver_sql("INSERT INTO experiment (name, created_at) VALUES ('e', 0)")
        conn.exec_driver_sql(
            "INSERT INTO run (id, experiment_id, name, status, start_time, user, lineage) "
            "VALUES ('r1', 1, 'r', 'FINISHED', 0, '', '{}')"
        )
        conn.exec_driver_sql(
            "INSERT INTO run_input (run_id, name, version, digest, source) VALUES ('r1', 'd', 'v1', 'x', '')"
        )
    db.close()
    assert Database(root / ".mlops" / "registry.db").schema_revision() == "0001_foundation"
    with Workspace.open(root) as ws:
        assert ws.db.schema_revision() == HEAD
        with ws.db.read() as conn:
            assert (
                conn.exec_driver_sql("SELECT forced FROM run_input WHERE run_id = 'r1'").scalar()
                == 0
            )
            assert conn.exec_driver_sql("SELECT count(*) FROM dataset").scalar() == 0
