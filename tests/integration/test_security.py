"""Another local user against the workspace and its daemon (issue 13, security 1, 5, 6).

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
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.integration.test_daemon import DaemonProc, make_ws, wait_for
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


def connect_loop(stop_fd, path):
    """Connect to `path` as fast as possible until told to stop; send a request on any
    connection that opens."""
    tries, errors, answers = 0, {}, []
    while not stopped(stop_fd) or tries == 0:
        tries += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            errors[name] = errors.get(name, 0) + 1
            s.close()
            continue
        try:
            s.settimeout(5)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            answers.append(s.recv(200).decode(errors="replace"))
        except OSError as exc:
            answers.append(f"error {exc}")
        finally:
            s.close()
    return {"tries": tries, "errors": errors, "answers": answers}


def http_as_nobody(stop_fd, path, requests):
    """Send each raw request on its own connection; what came back within 5 s."""
    out = []
    for raw in requests:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(path)
        s.sendall(raw.encode())
        data, deadline = b"", time.time() + 5  # an event stream never ends by itself
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
        s.close()
        out.append(data.decode(errors="replace"))
    return out


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


# --- 1. the daemon's socket ---------------------------------------------------------------


@as_root
def test_nobody_never_connects_while_the_daemon_starts(shared_tmp):
    """A tight connect() loop as nobody across daemon starts never gets in; an observer
    that stats the socket as fast as it can never sees it any mode but 0600."""
    ws = make_ws(shared_tmp / "ws", schedule="on_data_change = false")
    sock = str(ws.state / "daemon.sock")
    modes: set[int] = set()
    watching = threading.Event()
    watching.set()

    def observe():
        while watching.is_set():
            try:
                modes.add(stat.S_IMODE(os.lstat(sock).st_mode))
            except FileNotFoundError:
                pass

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    attacker = Nobody(connect_loop, sock)
    try:
        for _ in range(3):
            d = DaemonProc(ws)
            try:
                assert d.client.call("GET", "/status")["pid"] == d.proc.pid
                assert stat.S_IMODE((ws.state / "daemon.pid").stat().st_mode) == 0o600
            finally:
                d.stop()
    finally:
        seen = attacker.result()
        watching.clear()
        observer.join()
        ws.close()
    assert seen["answers"] == [] and sum(seen["errors"].values()) == seen["tries"], seen
    assert seen["tries"] > 1000 and set(seen["errors"]) == {"EACCES"}, seen
    assert modes == {0o600}, {oct(m) for m in modes}
    assert stat.S_IMODE(ws.state.stat().st_mode) == 0o700


@pytest.fixture(scope="module")
def daemon_ws():
    folder = open_dir()
    ws = make_ws(folder / "ws", schedule="on_data_change = false")
    d = DaemonProc(ws)
    yield ws, d
    d.stop()
    ws.close()
    shutil.rmtree(folder, ignore_errors=True)


@as_root
def test_a_connection_from_another_uid_is_refused_by_the_peer_check(daemon_ws):
    """With the folder and the socket opened up on purpose, nobody reaches the daemon,
    and the peer-uid check answers 403 to every request and runs nothing."""
    ws, d = daemon_ws
    sock = ws.state / "daemon.sock"
    ws.state.chmod(0o711)  # traversable, as a careless chmod would leave it
    sock.chmod(0o666)
    try:
        body = json.dumps({"pipeline": "p"})
        answers = run_as_nobody(
            http_as_nobody,
            str(sock),
            [
                "GET /status HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
                f"POST /jobs HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}",
                "GET /events HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
            ],
        )
    finally:
        ws.state.chmod(0o700)
        sock.chmod(0o600)
    for answer in answers:
        assert answer.startswith("HTTP/1.1 403"), answer
        assert "answers only its owner (uid 0), not uid 65534" in answer, answer
    assert ws.jobs.list() == []  # nothing was queued
    assert d.client.call("GET", "/status")["pid"] == d.proc.pid  # the owner still is served


async def test_the_guard_fails_closed_without_peer_credentials():
    """A scope without peer credentials (another server, another protocol) gets a 403;
    the same request with the owner's credentials reaches the app."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from mlops_console.automation.api import OwnerOnly
    from mlops_console.automation.peer import PeerCredentials

    guard = OwnerOnly(
        Starlette(routes=[Route("/status", lambda r: PlainTextResponse("in"))]), os.getuid()
    )

    async def call(extensions):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/status",
            "raw_path": b"/status",
            "query_string": b"",
            "headers": [],
            "extensions": extensions,
        }
        await guard(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = await call({})
    assert status == 403 and b"answers only its owner" in body
    owner = PeerCredentials(os.getpid(), os.getuid(), os.getgid())
    assert await call({"peer_credentials": owner}) == (200, b"in")
    other = owner._replace(uid=os.getuid() + 1)
    assert (await call({"peer_credentials": other}))[0] == 403


@pytest.mark.parametrize("pipeline", ["/abs/evil.toml", "../x", "x.toml", "p\n", "", 7])
def test_the_api_takes_pipeline_names_only(daemon_ws, pipeline):
    ws, _ = daemon_ws
    evil = ws.root.parent / "evil.toml"
    evil.write_text(SPEC.format(auto="true", extra=""))
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(ws.state / "daemon.sock")), base_url="http://d"
    ) as c:
        r = c.post("/jobs", json={"pipeline": pipeline})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "not allowed" in error or "Give the pipeline" in error, error
        assert ws.jobs.list() == []
        if pipeline == "../x":  # a path that exists is refused the same way
            r = c.post("/jobs", json={"pipeline": str(evil)})
            assert r.status_code == 400 and ws.jobs.list() == []


def test_unknown_routes_and_methods_answer_json(daemon_ws):
    ws, _ = daemon_ws
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(ws.state / "daemon.sock")), base_url="http://d"
    ) as c:
        r = c.get("/nosuch")
        assert r.status_code == 404 and "GET /nosuch" in r.json()["error"]
        r = c.delete("/status")
        assert r.status_code == 405 and "DELETE /status" in r.json()["error"]


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
            ws.pipelines.path("../x")
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
