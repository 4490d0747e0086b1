"""The device agent, for real: agent.py run as a subprocess against a temporary ROOT, its
supervisor a real daemon, its servers real HTTP servers on loopback ports (no device lab,
no SSH: what is tested is the script the controller copies to the devices)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

AGENT = Path(__file__).resolve().parents[1] / "src" / "mlops_edge_ssh" / "agent.py"

# The test server: answers every GET with what it was started with and what it serves.
SERVER = """\
import http.server, json, os, sys
port, tag, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(bundle, "model.txt")) as fh:
            model = fh.read()
        body = json.dumps({"tag": tag, "bundle": bundle, "model": model,
                           "digest": os.environ.get("EDGE_DIGEST")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

# An older Python (3.8.0-3.8.16) has no tarfile filters: the agent's own checks must hold.
NO_FILTER = """\
import runpy, sys, tarfile
del tarfile.data_filter
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(0.05)


def proc_start(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@dataclass
class Version:
    id: str
    digest: str
    model: str


@dataclass
class Device:
    """A ROOT on this machine, driven through agent.py as the controller drives it."""

    root: Path
    port: int = field(default_factory=free_port)
    agent_path: Path = AGENT
    no_filter: bool = False

    def agent(self, *args: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        cmd = [sys.executable, "-I", str(self.agent_path), str(self.root), *args]
        if self.no_filter:
            cmd[2:2] = ["-c", NO_FILTER]
        res = subprocess.run(
            cmd,
            input=json.dumps(doc) if doc is not None else "",
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert res.stdout, f"agent {args} answered nothing: {res.stderr}"
        answer: dict[str, Any] = json.loads(res.stdout)
        assert (res.returncode == 0) == answer["ok"], answer
        return answer

    def put_object(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "objects" / sha).write_bytes(data)
        return sha

    def send_version(self, number: int, model: str) -> Version:
        """The objects of a one-file bundle, on the device as the transfer leaves them."""
        sha = self.put_object(model.encode())
        manifest = {"files": {"model.txt": {"sha256": sha, "size": len(model)}}, "n": number}
        digest = self.put_object(json.dumps(manifest, sort_keys=True).encode())
        return Version(f"m-{number}-{digest[:12]}", digest, model)

    def install(self, v: Version, runtime: str = "") -> dict[str, Any]:
        return self.agent("install", v.id, "m", v.id.split("-")[1], v.digest, runtime)

    def configure(
        self,
        argv: list[str],
        version: Version | None = None,
        runtime: list[str] | str = "",
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "argv": argv,
            "env": {"EDGE_DIGEST": "{digest}", **(env or {})},
            "port": self.port,
            "runtime": runtime,
        }
        if version is not None:
            doc["version"] = version.id
        return self.agent("configure", doc=doc)

    def server_argv(self, tag: str) -> list[str]:
        return [sys.executable, "-c", SERVER, str(self.port), tag, "{bundle}"]

    def ship(self, number: int, tag: str, argv: list[str] | None = None) -> Version:
        """configure (with the version) + install, as the controller does before a switch."""
        v = self.send_version(number, f"model {number}")
        assert self.configure(argv or self.server_argv(tag), v)["ok"]
        assert self.install(v)["ok"]
        return v

    def get(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    def link(self, name: str) -> str | None:
        path = self.root / name
        return os.path.basename(os.readlink(path)) if path.is_symlink() else None

    def record(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.root / "run" / name).read_text())
        return doc


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    dev = Device(tmp_path / "edge root")
    yield dev
    if (dev.root / "run").is_dir():
        dev.agent("stop")


def test_each_version_is_started_with_its_own_serve_config(device: Device) -> None:
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    served = device.get()
    assert served["tag"] == "A" and served["model"] == "model 1"
    assert served["bundle"] == os.path.realpath(device.root / "versions" / v1.id)
    assert served["digest"] == v1.digest  # placeholders in env are substituted too

    v2 = device.ship(2, "B")  # the next version's config arrives before its switch
    for v in (v1, v2):
        assert (device.root / "versions" / f"{v.id}.serve.json").stat().st_mode & 0o777 == 0o600
    assert not (device.root / "run" / "serve.json").exists()
    assert [v["id"] for v in device.agent("probe")["versions"]] == [v1.id, v2.id]

    # a crash before the switch: the supervisor restarts v1 as v1 was configured
    old = device.record("server.json")["pid"]
    os.kill(old, signal.SIGKILL)
    eventually(lambda: device.record("server.json")["pid"] != old and device.get())
    assert device.get()["tag"] == "A"

    assert device.agent("switch", v2.id, "20")["ok"]
    assert device.get()["tag"] == "B"
    assert device.record("server.json")["serve"] == f"versions/{v2.id}.serve.json"
    back = device.agent("rollback", "20")
    assert back["ok"] and back["current"] == v1.id and back["previous"] == v2.id
    assert device.get() == served

    v3 = device.ship(3, "C")
    gc = device.agent("gc", "2")
    assert gc["removed"] == [v3.id]
    assert not (device.root / "versions" / f"{v3.id}.serve.json").exists()
    assert (device.root / "versions" / f"{v1.id}.serve.json").exists()


def test_configure_without_version_is_the_fallback(device: Device) -> None:
    old = device.send_version(1, "model 1")
    assert device.configure(device.server_argv("device-wide")) == {"ok": True}
    assert device.install(old)["ok"]
    new = device.ship(2, "own")
    assert device.agent("switch", old.id, "20")["ok"]
    assert device.get()["tag"] == "device-wide"
    assert device.record("server.json")["serve"] == "run/serve.json"
    assert device.agent("switch", new.id, "20")["ok"]
    assert device.get()["tag"] == "own"
    bad = device.agent("configure", doc={"argv": "python3 server.py", "version": new.id})
    assert not bad["ok"] and "argv" in bad["error"]


def test_reinstall_never_replaces_the_served_folder(device: Device) -> None:
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    folder = device.root / "versions" / v1.id
    inode, pid = folder.stat().st_ino, device.record("server.json")["pid"]

    (device.root / "versions" / f"{v1.id}.json").unlink()
    again = device.install(v1)
    assert folder.stat().st_ino == inode  # the same folder, not a rebuilt one renamed over
    assert again["ok"] and again["installed"] and again["repaired"] == []

    # a file lost from the served folder, and its object gone (gc saw no version.json)
    (device.root / "versions" / f"{v1.id}.json").unlink()
    (folder / "model.txt").unlink()
    repaired = device.install(v1)
    assert folder.stat().st_ino == inode
    assert (folder / "model.txt").read_text() == "model 1"
    assert repaired["repaired"] == ["model.txt"]

    (device.root / "versions" / f"{v1.id}.json").unlink()
    model_sha = hashlib.sha256(b"model 1").hexdigest()
    (device.root / "objects" / model_sha).unlink()
    assert device.install(v1)["repaired"] == []  # what is there is not asked for again
    (folder / "model.txt").unlink()
    (device.root / "versions" / f"{v1.id}.json").unlink()
    lacking = device.install(v1)
    assert not lacking["ok"] and lacking["missing"] == [model_sha]
    assert folder.stat().st_ino == inode

    info = device.agent("probe")
    assert info["current"] == v1.id and info["server"]["pid"] == pid and info["server"]["alive"]


def test_switch_to_a_version_that_does_not_start_keeps_the_old_one(device: Device) -> None:
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    v2 = device.ship(2, "-", argv=[sys.executable, "-c", "import sys; sys.exit(3)"])
    res = device.agent("switch", v2.id, "2")
    assert not res["ok"]
    assert (device.link("current"), device.link("previous")) == (v1.id, None)
    assert device.get()["tag"] == "A" and res["server"]["version_id"] == v1.id
    assert res["restored"] and v2.id in res["error"] and "exited" in res["error"]
    assert f"{v1.id} is serving again" in res["error"]
    assert f"starting {v2.id}" in res["log"]


def test_rollback_to_a_version_that_does_not_start_is_undone(device: Device) -> None:
    v1 = device.ship(1, "A")
    v2 = device.ship(2, "B")
    assert device.agent("switch", v1.id, "20")["ok"]
    assert device.agent("switch", v2.id, "20")["ok"]
    # v1's server cannot be started any more (its program is gone)
    assert device.configure([str(device.root / "no-such-server")], v1)["ok"]
    res = device.agent("rollback", "2")
    assert not res["ok"]
    assert (device.link("current"), device.link("previous")) == (v2.id, v1.id)
    assert device.get()["tag"] == "B"
    assert res["restored"] and v1.id in res["error"]
    assert f"{v2.id} is serving again" in res["error"]
    assert "could not start" in res["log"]
    assert device.agent("probe")["server"]["version_id"] == v2.id


def _layer(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


BASE = [(_member("site", tarfile.DIRTYPE), b""), (_member("site/sub", tarfile.DIRTYPE), b"")]


@pytest.mark.parametrize("no_filter", [False, True], ids=["filter", "py38"])
def test_layer_symlinks_inside_the_layer_are_accepted(device: Device, no_filter: bool) -> None:
    device.no_filter = no_filter
    sha = device.put_object(
        _layer(
            [
                *BASE,
                (_member("site/libx.so.1"), b"ELF"),
                (_member("site/sub/__init__.py"), b"x = 1\n"),
                (_member("site/libx.so", tarfile.SYMTYPE, "libx.so.1"), b""),
                (_member("site/alias", tarfile.SYMTYPE, "sub"), b""),
                (_member("site/sub/up", tarfile.SYMTYPE, "../libx.so.1"), b""),
                (_member("site/hard", tarfile.LNKTYPE, "site/libx.so.1"), b""),
            ]
        )
    )
    res = device.install(device.send_version(1, "model 1"), sha)
    assert res["ok"], res
    site = device.root / "runtime" / sha / "site"
    assert os.readlink(site / "libx.so") == "libx.so.1"
    assert (site / "libx.so").read_bytes() == (site / "sub" / "up").read_bytes() == b"ELF"
    assert (site / "alias" / "__init__.py").read_text() == "x = 1\n"
    assert (site / "hard").stat().st_ino == (site / "libx.so.1").stat().st_ino
    assert (site / "libx.so.1").stat().st_mode & 0o777 == 0o600


REFUSED = {
    "absolute-symlink": [(_member("site/x", tarfile.SYMTYPE, "/etc/passwd"), b"")],
    "escaping-symlink": [(_member("site/x", tarfile.SYMTYPE, "../../outside"), b"")],
    "chain-of-links": [  # each inside on its own; a/.. is the layer's parent
        (_member("site/a", tarfile.SYMTYPE, ".."), b""),
        (_member("site/b", tarfile.SYMTYPE, "a/../outside"), b""),
    ],
    "write-through-link": [
        (_member("site/d", tarfile.SYMTYPE, "sub"), b""),
        (_member("site/d/evil.py"), b"x"),
    ],
    "hard-link-outside": [(_member("site/h", tarfile.LNKTYPE, "../outside"), b"")],
    "hard-link-absolute": [(_member("site/h", tarfile.LNKTYPE, "/etc/passwd"), b"")],
    "device": [(_member("site/null", tarfile.CHRTYPE), b"")],
    "fifo": [(_member("site/fifo", tarfile.FIFOTYPE), b"")],
    "dotdot-path": [(_member("site/../../outside"), b"x")],
    "absolute-path": [(_member("/tmp/outside"), b"x")],
}


@pytest.mark.parametrize("no_filter", [False, True], ids=["filter", "py38"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_layer_members_that_leave_the_layer_are_refused(
    device: Device, case: str, no_filter: bool, tmp_path: Path
) -> None:
    device.no_filter = no_filter
    sha = device.put_object(_layer([*BASE, *REFUSED[case]]))
    res = device.install(device.send_version(1, "model 1"), sha)
    assert not res["ok"], res
    assert sha[:12] in res["error"] or "OutsideDestination" in res["error"], res
    assert not (device.root / "runtime" / sha).exists()
    assert not (device.root / "runtime" / f"{sha}.tmp").exists()
    assert not any(p.name == "outside" for p in tmp_path.rglob("*"))


def test_a_reused_pid_is_not_taken_for_the_server_or_supervisor(device: Device) -> None:
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    server, sup = device.record("server.json"), device.record("supervisor.json")
    assert server["pid_start"] == proc_start(server["pid"])
    assert sup["pid_start"] == proc_start(sup["pid"])
    assert device.agent("stop")["ok"]

    # the supervisor's and the server's pids now belong to other processes
    other = subprocess.Popen(["sleep", "60"])
    try:
        run = device.root / "run"
        (run / "supervisor.json").write_text(json.dumps({"pid": other.pid, "pid_start": "1"}))
        (run / "server.json").write_text(json.dumps({**server, "pid": other.pid, "pid_start": "1"}))
        info = device.agent("probe")["server"]
        assert info["alive"] is False and info["supervisor"] is False
        res = device.agent("switch", v1.id, "20")  # a new supervisor; `sleep` is not signalled
        assert res["ok"] and res["switched"] and res["supervisor"] == "watchdog"
        assert other.poll() is None
        assert device.record("supervisor.json")["pid"] != other.pid
        assert device.get()["tag"] == "A"

        # without /proc's start time (an older record): kill 0 decides, as before
        serving = (run / "server.json").read_text()
        older = {k: v for k, v in server.items() if k != "pid_start"}
        (run / "server.json").write_text(json.dumps({**older, "pid": other.pid}))
        assert device.agent("probe")["server"]["alive"] is True
        (run / "server.json").write_text(serving)
    finally:
        other.kill()
        other.wait()


def test_a_supervisor_of_another_agent_is_replaced(device: Device) -> None:
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    before = device.record("supervisor.json")
    upgraded = device.root / "bin" / "agent-upgraded.py"
    upgraded.write_bytes(AGENT.read_bytes())
    device.agent_path = upgraded
    v2 = device.ship(2, "B")
    assert device.agent("switch", v2.id, "20")["ok"]
    after = device.record("supervisor.json")
    assert after["agent"] == str(upgraded) and after["pid"] != before["pid"]
    assert device.get()["tag"] == "B"


def _site_layer(name: str, text: str) -> bytes:
    return _layer([*BASE, (_member(f"site/{name}"), text.encode())])


def _server_pythonpath(device: Device) -> str:
    environ = Path(f"/proc/{device.record('server.json')['pid']}/environ").read_bytes()
    return dict(e.split("=", 1) for e in environ.decode().split("\0") if "=" in e)["PYTHONPATH"]


def test_a_version_runs_from_several_layers_and_gc_keeps_the_ones_kept_versions_need(
    device: Device,
) -> None:
    deps = device.put_object(_site_layer("dep.py", "WHO = 'deps'\n"))
    console1 = device.put_object(_site_layer("app.py", "WHO = 'console 1'\n"))
    runtime = device.root / "runtime"
    env = {"PYTHONPATH": "{runtime.1}/site:{runtime}/site"}  # the console's layer first

    v1 = device.send_version(1, "model 1")
    assert device.configure(device.server_argv("{runtime}+{runtime.1}"), v1, [deps, console1], env)[
        "ok"
    ]
    assert device.install(v1, f"{deps} {console1}")["ok"]  # one string of shas
    assert device.agent("switch", v1.id, "20")["ok"]
    assert device.get()["tag"] == f"{runtime / deps}+{runtime / console1}"
    assert _server_pythonpath(device) == f"{runtime / console1}/site:{runtime / deps}/site"
    for sha in (deps, console1):  # each extracted, private, and its tar not kept twice
        assert (runtime / sha / "site").stat().st_mode & 0o777 == 0o700
        assert not (device.root / "objects" / sha).exists()
    assert (runtime / console1 / "site" / "app.py").stat().st_mode & 0o777 == 0o600

    # a newer console: only its layer arrives; the dependencies are reused where they are
    (runtime / f"{console1}.tmp").mkdir()  # what an extraction cut short leaves
    assert device.agent("probe")["runtimes"] == sorted([deps, console1])
    console2 = device.put_object(_site_layer("app.py", "WHO = 'console 2'\n"))
    v2 = device.send_version(2, "model 2")
    assert device.configure(device.server_argv("{runtime.1}"), v2, f"{deps} {console2}", env)["ok"]
    assert device.agent("install", v2.id, "m", "2", v2.digest, deps, console2)["ok"]
    assert device.agent("switch", v2.id, "20")["ok"]
    assert device.get()["tag"] == str(runtime / console2)
    assert device.agent("probe")["runtimes"] == sorted([deps, console1, console2])

    # an older controller's form: one sha, one layer
    v3 = device.send_version(3, "model 3")
    assert device.configure(device.server_argv("{runtime}"), v3, deps)["ok"]
    assert device.install(v3, deps)["ok"]
    assert device.agent("switch", v3.id, "20")["ok"]
    assert device.get()["tag"] == str(runtime / deps)

    # v1 goes: its console layer (no kept version needs it) and the old leftover go too
    old = time.time() - 7200
    os.utime(runtime / f"{console1}.tmp", (old, old))
    gc = device.agent("gc", "2")
    assert gc["removed"] == [v1.id] and gc["removed_runtimes"] == [console1]
    assert sorted(p.name for p in runtime.iterdir()) == sorted([deps, console2])
    assert device.get()["tag"] == str(runtime / deps)

    # the same version again with other layers is served with those
    console3 = device.put_object(_site_layer("app.py", "WHO = 'console 3'\n"))
    assert device.agent("install", v2.id, "m", "2", v2.digest, deps, console3)["ok"]
    assert device.agent("switch", v2.id, "20")["ok"]
    assert device.get()["tag"] == str(runtime / console3)


@pytest.mark.parametrize("bad", ["../../etc", "a" * 63, "A" * 64])
def test_a_runtime_that_is_no_sha256_is_refused(device: Device, bad: str) -> None:
    v = device.send_version(1, "model 1")
    res = device.install(v, bad)
    assert not res["ok"] and "not a sha256" in res["error"]
    res = device.configure(device.server_argv("x"), v, ["b" * 64, bad])
    assert not res["ok"] and "not a sha256" in res["error"]
    assert not (device.root / "versions" / f"{v.id}.serve.json").exists()


def test_stop_is_for_good_and_the_next_switch_starts_again(device: Device) -> None:
    """`stop` (a failed first version, a deleted deployment): nothing serves afterwards, not
    even what a supervisor restarted by systemd or at boot would find: `current` is gone."""
    v1 = device.ship(1, "A")
    assert device.agent("switch", v1.id, "20")["ok"]
    server, sup = device.record("server.json"), device.record("supervisor.json")
    stopped = device.agent("stop")
    assert stopped["ok"] and stopped["current"] is None
    assert device.link("current") is None
    for pid in (server["pid"], sup["pid"]):
        eventually(lambda pid=pid: not Path(f"/proc/{pid}").exists() or proc_state(pid) == "Z")
    info = device.agent("probe")
    assert info["current"] is None and info["server"]["alive"] is False
    assert [v["id"] for v in info["versions"]] == [v1.id]  # the versions are kept
    assert device.agent("switch", v1.id, "20")["ok"]
    assert device.get()["tag"] == "A"


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
