"""Starting, stopping and asking after a workspace's daemon (`mlops up | down | status |
daemon`, and the console's "daemon: start").

A background daemon is `mlops daemon` in its own session, its output in
`.mlops/logs/daemon.log`. It is up once its control socket answers `/status`, and down once
it has removed its pid file (or its process is gone without one): these functions wait on
those conditions, for as long as the process that is starting or stopping is alive, up to
a generous timeout, never on a fixed short budget a loaded machine can miss.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mlops_console import process
from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.automation.client import DaemonClient
    from mlops_console.workspace import Workspace

START_TIMEOUT = 120.0  # seconds for a live, starting daemon to answer (migrations, orphans)
STOP_TIMEOUT = 60.0  # seconds for a daemon asked to stop to finish its chains' cleanup

# a Workspace, a folder in one, or None for the nearest one up from here
WorkspaceOrRoot: TypeAlias = "Workspace | str | os.PathLike[str] | None"


@dataclass(frozen=True)
class DaemonPaths:
    """Where a workspace's daemon keeps its socket, pid file and log."""

    root: Path
    state: Path

    @property
    def socket(self) -> Path:
        return self.state / "daemon.sock"

    @property
    def pid_file(self) -> Path:
        return self.state / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.state / "logs" / "daemon.log"


@dataclass(frozen=True)
class DaemonStatus:
    """Whether a daemon runs for a workspace and, if so, what its `/status` says."""

    running: bool
    socket: Path
    log: Path
    pid: int | None = None
    workspace: str | None = None
    started: float | None = None  # epoch seconds
    uptime_s: float | None = None
    chains: tuple[int, ...] = ()  # ids of the chains running now
    queued: int = 0
    schedules: int = 0
    launched: bool = False  # start(): True when this call started it
    answer: Mapping[str, Any] = field(default_factory=dict)  # `/status` as the daemon sent it

    def to_dict(self) -> dict[str, Any]:
        """`mlops status --json`: the daemon's own answer (its `running` lists chain ids)."""
        return {"running": True, **self.answer} if self.running else {"running": False}


def paths(ws_or_root: WorkspaceOrRoot) -> DaemonPaths:
    """The daemon's files for a workspace, or for the workspace at (or above) a folder
    (None: the nearest one up from the current directory)."""
    if ws_or_root is None or isinstance(ws_or_root, str | os.PathLike):
        from mlops_console.workspace import STATE_DIR, find_root

        found = find_root(None if ws_or_root is None else os.fspath(ws_or_root))
        return DaemonPaths(found, found / STATE_DIR)
    return DaemonPaths(ws_or_root.root, ws_or_root.state)


def _client(where: DaemonPaths) -> DaemonClient:
    # imported here: httpx loads only when a daemon is asked
    from mlops_console.automation.client import DaemonClient

    return DaemonClient(where)


def _status_of(where: DaemonPaths, answer: Mapping[str, Any] | None, **extra: Any) -> DaemonStatus:
    if answer is None:
        return DaemonStatus(running=False, socket=where.socket, log=where.log, **extra)
    return DaemonStatus(
        running=True,
        socket=where.socket,
        log=where.log,
        pid=answer.get("pid"),
        workspace=answer.get("workspace"),
        started=answer.get("started"),
        uptime_s=answer.get("uptime_s"),
        chains=tuple(answer.get("running") or ()),
        queued=answer.get("queued", 0),
        schedules=answer.get("schedules", 0),
        answer=dict(answer),
        **extra,
    )


def status(ws_or_root: WorkspaceOrRoot) -> DaemonStatus:
    """Whether a daemon answers on the workspace's control socket, and what it reports."""
    where = paths(ws_or_root)
    return _status_of(where, _client(where).status())


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float | None,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll `ready` (quickly at first, then every half second) until it holds, `alive`
    stops holding, or `timeout` seconds pass (None: for as long as `alive` holds)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.05
    while True:
        if ready():
            return True
        if not alive() or (deadline is not None and time.monotonic() >= deadline):
            return ready()
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def start(
    ws_or_root: WorkspaceOrRoot,
    *,
    foreground: bool = False,
    wait: bool = True,
    timeout: float | None = START_TIMEOUT,
    settle: float = 2.0,
    concurrency: int = 1,
    job_timeout: float = 3600.0,
) -> DaemonStatus:
    """Start a daemon for the workspace unless one runs (then its status, `launched` False).

    In the background (the default) it is `mlops daemon` in its own session, and this
    waits until its socket answers: for as long as the process lives, at most `timeout`
    seconds. `wait=False` returns at once (`running` False, `pid` the new process's).
    `foreground=True` runs the daemon in this process until it is stopped, as `run` does.
    """
    if foreground:
        ws = _workspace(ws_or_root)
        run(ws, concurrency=concurrency, job_timeout=job_timeout, settle=settle)
        return status(ws)
    where = paths(ws_or_root)
    client = _client(where)
    current = client.status()
    if current is not None:
        return _status_of(where, current)
    where.log.parent.mkdir(parents=True, exist_ok=True)
    with open(where.log, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",  # the workspace is not on the daemon's sys.path (its own click.py, ...)
                "-m",
                "mlops_console.cli.main",
                "-w",
                str(where.root),
                "daemon",
                "--settle",
                str(settle),
                "--concurrency",
                str(concurrency),
                "--job-timeout",
                str(job_timeout),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    if not wait:
        return _status_of(where, None, pid=proc.pid, launched=True)
    answer: dict[str, Any] = {}

    def answers() -> bool:
        got = client.status()
        if got is not None:
            answer.update(got)
        return got is not None

    wait_until(answers, timeout=timeout, alive=lambda: proc.poll() is None)
    if answer:
        # another `mlops up` may have won the lock: then ours exited and theirs answers
        return _status_of(where, answer, launched=answer.get("pid") == proc.pid)
    raise MlopsError(f"The daemon did not start; see {where.log}.")


def stop(
    ws_or_root: WorkspaceOrRoot,
    *,
    wait: bool = True,
    timeout: float | None = STOP_TIMEOUT,
) -> DaemonStatus:
    """Ask the workspace's daemon to stop (its running chains are stopped and marked) and
    wait until it is gone. Returns its status from just before (`running` False: none ran)."""
    where = paths(ws_or_root)
    client = _client(where)
    before = _status_of(where, client.status())
    if not before.running:
        return before
    client.call("POST", "/shutdown")
    pid = before.pid
    if wait:

        def gone() -> bool:
            if not where.pid_file.exists():
                return True
            # killed before it could tidy up: the pid file stays, the process does not
            return pid is not None and not process.is_alive(pid) and client.status() is None

        wait_until(gone, timeout=timeout)
    return before


def run(
    ws: Workspace,
    *,
    concurrency: int = 1,
    job_timeout: float = 3600.0,
    settle: float = 2.0,
) -> None:
    """Run the daemon in this process until SIGTERM, SIGINT or `POST /shutdown`."""
    from mlops_console.automation.daemon import Daemon

    d = Daemon(ws, concurrency=concurrency, job_timeout=job_timeout, settle_seconds=settle)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: d.shutdown())
    d.run()


def _workspace(ws_or_root: WorkspaceOrRoot) -> Workspace:
    from mlops_console.workspace import Workspace

    if isinstance(ws_or_root, Workspace):
        return ws_or_root
    return Workspace.open(None if ws_or_root is None else os.fspath(ws_or_root))
