import os
import pickle

import pytest

from mlops_console.errors import ArtifactIntegrityError, NotFound
from mlops_console.store.artifacts import ArtifactStore


class _Bomb:
    """Unpickling this writes a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip_and_dedup(tmp_path):
    store = ArtifactStore(tmp_path / "objects")
    a = store.put_bytes(b"hello")
    b = store.put_bytes(b"hello")
    assert a == b == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.get_bytes(a) == b"hello"
    assert [d for d, _ in store.iter_objects()] == [a]
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []


def test_put_file_streams(tmp_path):
    store = ArtifactStore(tmp_path / "objects")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    d = store.put_file(big)
    assert store.verify(d).read_bytes() == big.read_bytes()


def test_tampered_pickle_is_refused_and_never_unpickled(tmp_path):
    store = ArtifactStore(tmp_path / "objects")
    d = store.put_bytes(pickle.dumps({"model": 1}))
    path = store.path_of(d)
    os.chmod(path, 0o644)
    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(ArtifactIntegrityError, match="corrupt or was tampered"):
        store.load_pickle(d)
    assert not marker.exists()
    # the honest object still loads after restore
    os.chmod(path, 0o644)
    path.write_bytes(pickle.dumps({"model": 1}))
    assert store.load_pickle(d) == {"model": 1}


def test_missing_and_malformed_ids(tmp_path):
    store = ArtifactStore(tmp_path / "objects")
    with pytest.raises(NotFound, match="missing"):
        store.get_bytes("0" * 64)
    with pytest.raises(NotFound, match="not a sha256"):
        store.get_bytes("../../etc/passwd")


def test_gc_removes_only_unreferenced_old_objects(ws):
    keep = ws.artifacts.put_bytes(b"referenced")
    drop = ws.artifacts.put_bytes(b"orphan")
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO object_ref (hash, kind, owner) VALUES (?, 'test', 'x')", (keep,)
        )
    young = ws.gc(grace_seconds=3600)
    assert young.removed == [] and young.young == 1
    dry = ws.gc(dry_run=True, grace_seconds=0)
    assert dry.removed == [drop] and ws.artifacts.exists(drop)
    report = ws.gc(grace_seconds=0)
    assert report.removed == [drop] and report.bytes_freed == len(b"orphan")
    assert ws.artifacts.exists(keep) and not ws.artifacts.exists(drop)
