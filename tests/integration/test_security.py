"""Another local user against the workspace (issue 13, security 5 and 6).

The attacker is a forked child that became `nobody` (uid 65534): no exec, because root's
Python is not reachable by nobody, and nothing imported after the fork. Every workspace
sits in a 0755 folder under /tmp, so only `.mlops` and the modes inside it keep nobody
out. The attacks that need a second uid are skipped when the tests do not run as root.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import stat
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.integration.test_daemon import wait_for
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.errors import InvalidName, MlopsError
from mlops_console.names import check_name
from mlops_console.workspace import Workspace

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")


def open_dir() -> Path:
    """A fresh folder that every user may traverse (pytest's own tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="mlops-sec-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


@pytest.fixture
def shared_tmp():
    folder = open_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Nobody:
    """Run `fn(stop_fd, *args)` as uid/gid 65534 in a forked child; `result()` stops it
    (`fn` polls `stopped(stop_fd)`) and returns what it returned (JSON-able)."""

    def __init__(self, fn, *args):
        self._out_r, out_w = os.pipe()
        stop_r, self._stop_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: drop to nobody, run, report, exit without cleanup
            try:
                os.close(self._out_r)
                os.close(self._stop_w)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                report = {"ok": fn(stop_r, *args)}
            except BaseException as exc:  # reported to the parent, which fails the test
                report = {"error": repr(exc)}
            data = json.dumps(report).encode()
            while data:
                data = data[os.write(out_w, data) :]
            os._exit(0)
        os.close(out_w)
        os.close(stop_r)

    def result(self, timeout: float = 60):
        os.close(self._stop_w)  # the child sees EOF on its stop pipe
        chunks, deadline = [], time.time() + timeout
        while time.time() < deadline:
            ready, _, _ = select.select([self._out_r], [], [], 1)
            if ready:
                chunk = os.read(self._out_r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        os.close(self._out_r)
        os.waitpid(self.pid, 0)
        report = json.loads(b"".join(chunks) or b'{"error": "no report"}')
        assert "error" not in report, report["error"]
        return report["ok"]


def run_as_nobody(fn, *args):
    return Nobody(fn, *args).result()


def stopped(stop_fd) -> bool:
    return bool(select.select([stop_fd], [], [], 0)[0])


# --- what nobody does (in the child: socket, os and time only) -------------------------


def try_to_read(stop_fd, paths):
    out = {}
    for p in paths:
        try:
            with open(p, "rb") as fh:
                fh.read(1)
            out[p] = "read"
        except OSError as exc:
            out[p] = errno.errorcode.get(exc.errno, str(exc.errno))
    try:
        os.listdir(paths[0].split("/.mlops/")[0] + "/.mlops")
        out["listdir"] = "listed"
    except OSError as exc:
        out["listdir"] = errno.errorcode.get(exc.errno, str(exc.errno))
    return out


# --- 5 and 6: names and modes, on a workspace the CLI made ---------------------------------


def cli(*args, **kw):
    return run_cli(*args, env={"MLOPS_PREDLOG_ROTATE": "1"}, **kw)


@pytest.fixture(scope="module")
def cli_ws():
    """A workspace made by the real `mlops` command: one dataset version, one model."""
    folder = open_dir()
    root = folder / "ws"
    root.mkdir(mode=0o755)
    cli("init", str(root), check=True)
    make_data().to_parquet(root / "data" / "d.parquet")
    (root / "pipelines" / "p.toml").write_text(SPEC.format(auto="true", extra=""))
    w = ("-w", str(root))
    cli(*w, "data", "add", "d", "data/d.parquet", "--timestamp", "ts", "--entity", "id", check=True)
    cli(*w, "run", "p", "--set", "search.method=none", check=True)
    yield root
    cli(*w, "deployments", "stop", "svc")
    shutil.rmtree(folder, ignore_errors=True)


def files_outside(folder: Path, root: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_relative_to(root)}


@pytest.mark.parametrize(
    "name", ["../../escaped", "../../../escaped", "/tmp/mlops-sec-escaped", "svc\n", "a/b", ".."]
)
def test_deploy_refuses_a_name_that_is_not_a_plain_name(cli_ws, name):
    before = files_outside(cli_ws.parent, cli_ws)
    proc = cli("-w", str(cli_ws), "deploy", "m@champion", "--name", name)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"Error: Deployment name {name!r} is not allowed"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert files_outside(cli_ws.parent, cli_ws) == before
    assert not Path("/tmp/mlops-sec-escaped").exists()
    assert not (cli_ws / "escaped").exists()
    deployments = cli_ws / ".mlops" / "deployments"
    assert not deployments.exists() or list(deployments.iterdir()) in ([], [deployments / "svc"])


def test_run_refuses_a_pipeline_file_outside_the_workspace(cli_ws):
    outside = cli_ws.parent / "evil.toml"
    outside.write_text(SPEC.format(auto="true", extra=""))
    for ref in (str(outside), "../evil.toml", "../evil"):
        proc = cli("-w", str(cli_ws), "run", ref)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "leads outside" in proc.stderr or "is not allowed" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "kind", ["dataset", "model", "deployment", "pipeline", "feature view", "alias"]
)
@pytest.mark.parametrize("name", ["ok\n", "../x", "/abs", "a/b", "", " x"])
def test_every_kind_of_name_is_checked_the_same_way(kind, name):
    with pytest.raises(InvalidName, match="is not allowed"):
        check_name(kind, name)


def test_names_reach_no_path_in_the_services(tmp_path):
    with Workspace.init(tmp_path / "ws") as ws:
        make_data(50).to_parquet(ws.root / "data" / "d.parquet")
        with pytest.raises(InvalidName, match="Dataset name"):
            ws.data.add("d\n", "data/d.parquet")
        with pytest.raises(InvalidName, match="Model name"):
            ws.models.register("m\n", artifact=b"x")
        with pytest.raises(InvalidName, match="Deployment name"):
            ws.deployments.target("local").logs("../../x")
        with pytest.raises(MlopsError, match="Pipeline name"):
            ws.pipeline_path("../x")
        (ws.root / "features" / "f.toml").write_text(
            'name = "f\\n"\nentities = ["id"]\ntimestamp = "ts"\nsql = "SELECT 1"\n'
        )
        with pytest.raises(MlopsError, match="f.toml"):
            ws.features.views()
        assert not (tmp_path / "x").exists()


@as_root
def test_state_is_private_to_its_owner(cli_ws):
    """registry.db, a lake snapshot, an object and a prediction-log segment, each written
    by a real process (CLI, model server), are 0600 (0400 if immutable) in 0700 folders,
    and nobody can read any of them."""
    state = cli_ws / ".mlops"
    rec = json.loads(
        cli("-w", str(cli_ws), "deploy", "m@champion", "--name", "svc", "--json", check=True).stdout
    )
    rows = json.loads(make_data(3, seed=5)[["x1", "x2", "plan"]].to_json(orient="records"))
    assert httpx.post(rec["endpoint"] + "/invocations", json={"instances": rows}).status_code == 200
    segments = wait_for(
        lambda: [p for p in (state / "logs" / "predictions" / "svc").glob("*.jsonl*")], 30, 0.1
    )
    files = {
        "registry": state / "registry.db",
        "snapshot": next((state / "lake" / "datasets" / "d").rglob("*.parquet")),
        "object": next(p for p in (state / "objects").rglob("*") if p.is_file()),
        "segment": segments[0],
        "admin token": state / "deployments" / "svc" / "admin-token",
    }
    for what, path in files.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0 and mode & 0o400, (what, oct(mode))  # immutable ones: 0400
        folder = path.parent
        while folder != cli_ws:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (what, folder)
            folder = folder.parent
    seen = run_as_nobody(try_to_read, [str(p) for p in files.values()])
    assert set(seen.values()) == {"EACCES"}, seen


@as_root
def test_opening_an_old_workspace_tightens_its_state(shared_tmp):
    Workspace.init(shared_tmp / "ws").close()
    state = shared_tmp / "ws" / ".mlops"
    for folder in (state, state / "lake", state / "objects"):
        folder.chmod(0o755)  # as every workspace made before this change is
    (state / "registry.db").chmod(0o644)
    assert run_as_nobody(try_to_read, [str(state / "registry.db")])[str(state / "registry.db")] == (
        "read"
    )  # the attack this closes
    cli("-w", str(shared_tmp / "ws"), "models", "list", check=True)
    for folder in (state, state / "lake", state / "objects"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    seen = run_as_nobody(try_to_read, [str(state / "registry.db")])
    assert set(seen.values()) == {"EACCES"}, seen
