"""`mlops daemon`: schedules, file watchers, the job queue and the control API.

One daemon per workspace, guarded by an exclusive lock on `.mlops/daemon.lock`. Chains
run as child processes (at most `concurrency` at a time); the control API listens on the
Unix socket `.mlops/daemon.sock`, created 0600 inside the 0700 `.mlops`, and answers only
connections whose peer uid is the daemon's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from mlops_console import process
from mlops_console.automation.jobs import Job, JobStatus, Outcome
from mlops_console.automation.supervise import Supervisor
from mlops_console.automation.watch import Watcher
from mlops_console.errors import ConfigError, MlopsError

if TYPE_CHECKING:
    from mlops_console.automation.schedules import Scheduler
    from mlops_console.workspace import Workspace

log = logging.getLogger(__name__)

CONFIG_POLL_S = 1.0  # how often the daemon looks for an edited mlops.toml


class Daemon:
    def __init__(
        self,
        ws: Workspace,
        concurrency: int = 1,
        job_timeout: float = 3600.0,
        settle_seconds: float = 2.0,
        max_attempts: int = 2,
    ):
        self.ws = ws
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self.settle = settle_seconds
        self.max_attempts = max_attempts
        self.lock_path = ws.state / "daemon.lock"
        self.pid_path = ws.state / "daemon.pid"
        self.sock_path = ws.state / "daemon.sock"
        self.procs: dict[int, subprocess.Popen] = {}
        self.stop = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.event_seq = 0
        self._event_lock = threading.Lock()
        self.started = time.time()
        self.scheduler: Scheduler | None = None
        self._lock_fh: IO[str] | None = None
        self._config_problem: str | None = None  # the last invalid mlops.toml reported
        self.supervisor = Supervisor(ws, self.event, self.stop)
        self.watcher = Watcher(ws, self.event, settle_seconds, max_attempts)

    # --- lifecycle ----------------------------------------------------------------------

    def acquire(self) -> None:
        self._lock_fh = open(self.lock_path, "a+")  # noqa: SIM115 (held for the daemon's life)
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self.pid_path.read_text().strip() if self.pid_path.exists() else "unknown"
            raise MlopsError(
                f"A daemon already runs for this workspace (pid {pid}). `mlops status` "
                "reports on it; `mlops down` stops it."
            ) from None
        self.pid_path.write_text(str(os.getpid()))

    def event(self, data: dict[str, Any]) -> None:
        """Record an event for `/events` (the last 1,000; each has a growing `seq`)."""
        with self._event_lock:
            self.event_seq += 1
            self.events.append({"at": time.time(), "seq": self.event_seq, **data})
            del self.events[:-1000]

    def run(self) -> None:
        """Run in the foreground until SIGTERM/SIGINT or POST /shutdown."""
        os.umask(0o077)  # state the daemon writes is its owner's alone
        self.acquire()
        # before any thread or child starts: the umask the socket needs is process-wide
        sock = self.bind()
        self.end_orphans()  # before any retry is queued: a chain never runs twice at once
        recovered = self.ws.jobs.recover()
        for job in recovered:
            self.event(
                {
                    "event": "recovered",
                    "job": job.id,
                    "status": "failed",
                    "outcome": Outcome.INTERRUPTED.value,
                }
            )
        self.supervisor.resupervise()
        self.start_scheduler()
        self.watcher.start(self.pipelines())
        worker = threading.Thread(target=self.work, name="job-queue", daemon=True)
        worker.start()
        watcher = threading.Thread(target=self.monitor, name="monitoring", daemon=True)
        watcher.start()
        supervisor = threading.Thread(target=self.supervisor.run, name="supervision", daemon=True)
        supervisor.start()
        try:
            self.serve(sock)
        finally:
            sock.close()
            self.stop.set()
            worker.join(timeout=10)
            for proc in self.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            if self.scheduler:
                self.scheduler.shutdown(wait=False)
            self.watcher.close()
            self.sock_path.unlink(missing_ok=True)
            self.pid_path.unlink(missing_ok=True)

    def end_orphans(self) -> None:
        """End the chain processes a killed daemon left running (each in its own process
        group), verified by pid and start time, and wait until each group is gone."""
        for job in self.ws.jobs.running():
            if job.pid is None or job.kind not in ("chain", "score"):
                continue
            if process.end_group(job.pid, job.pid_start):
                self.event({"event": "orphan_ended", "job": job.id, "pid": job.pid})

    # --- schedules ------------------------------------------------------------------------

    def pipelines(self) -> dict[str, Any]:
        """The valid pipelines' specs by name; an invalid file is an event, not a stop."""

        def invalid(name: str, detail: str) -> None:
            self.event({"event": "pipeline_invalid", "pipeline": name, "detail": detail})

        return {p.name: p.spec for p in self.ws.pipelines.list(on_invalid=invalid)}

    def start_scheduler(self) -> None:
        """APScheduler jobs rebuilt from the specs (never unpickled from the database)."""
        from mlops_console.automation.schedules import Scheduler

        self.scheduler = Scheduler(self.ws, fire=self.scheduled, on_event=self.event)
        self.scheduler.start(self.pipelines())

    def scheduled(self, schedule) -> None:
        """A schedule fired: queue its pipeline's chain (or score job)."""
        job = self.ws.jobs.submit(
            schedule.kind, schedule.pipeline, trigger="schedule", max_attempts=self.max_attempts
        )
        self.event(
            {
                "event": "triggered",
                "pipeline": schedule.pipeline,
                "by": "schedule",
                "kind": schedule.kind,
                "schedule": schedule.id,
                "job": job.id,
            }
        )

    def schedules(self) -> list[dict[str, Any]]:
        return self.scheduler.list() if self.scheduler else []

    # --- the job queue ------------------------------------------------------------------------

    def work(self) -> None:
        renewed = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - renewed > 5:
                    self.ws.jobs.renew_leases(list(self.procs))
                    renewed = time.monotonic()
                self.watcher.settle_pending()
                self.reap()
                while len(self.procs) < self.concurrency:
                    job = self.ws.jobs.claim_next()
                    if job is None:
                        break
                    self.launch(job)
            except Exception as exc:  # the queue must survive a bad moment (e.g. a locked file)
                self.event({"event": "worker_error", "detail": str(exc)})
            self.stop.wait(0.3)

    def launch(self, job: Job) -> None:
        log = open(job.log_path, "ab")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",  # the workspace (cwd) is not on sys.path: a planted numpy.py stays inert
                "-m",
                "mlops_console.automation.chain",
                str(self.ws.root),
                str(job.id),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.ws.root,
        )
        log.close()
        self.procs[job.id] = proc
        self.ws.jobs.claim_process(job.id, proc.pid, process.start_time(proc.pid))
        self.event({"event": "started", "job": job.id, "pipeline": job.pipeline})

    def reap(self) -> None:
        for job_id, proc in list(self.procs.items()):
            job = self.ws.jobs.get(job_id)
            code = proc.poll()
            if code is None:
                too_long = job.started_at and time.time() - job.started_at > self.job_timeout
                if job.cancel_requested or too_long:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    if job.cancel_requested:
                        self._ended(job, Outcome.CANCELLED, "cancelled on request")
                    else:
                        why = f"timed out after {self.job_timeout:.0f} s"
                        self._ended(job, Outcome.TIMED_OUT, why)
                    self.procs.pop(job_id)
                continue
            self.procs.pop(job_id)
            # a process that died without saying how it ended (its final state is not
            # written yet) crashed; otherwise `_ended` finds the chain's own outcome
            self._ended(job, Outcome.ERROR, f"the chain process exited with code {code}")

    def _ended(self, job: Job, outcome: Outcome, why: str) -> None:
        """After a chain's process group is gone: its open steps and its tracking run end,
        a canary it left half judged is dropped, and the job's final state is written
        (unless the chain wrote it first); a retry follows if the outcome allows one."""
        job_id = job.id
        if self.ws.jobs.get(job_id).status is JobStatus.RUNNING:
            self._close_children(job_id, why, outcome)
            self.ws.jobs.kill_runs(job_id)
            self.ws.jobs.undo_half_deploy(job)
            self.ws.jobs.finish(job_id, outcome, why)
        job = self.ws.jobs.get(job_id)
        self._maybe_retry(job)
        self.event(
            {
                "event": "ended",
                "job": job_id,
                "status": job.status.value,
                "outcome": job.outcome.value if job.outcome else "",
                "detail": job.detail,
            }
        )

    def _maybe_retry(self, job: Job) -> None:
        """Failures that may pass on another try (a crash, a timeout) are retried with
        exponential backoff; quarantined data or failed gates are not (the same input
        fails the same way), nor is a cancel."""
        if job.attempt >= job.max_attempts or job.outcome is None:
            return
        if not job.outcome.retryable:
            return
        delay = 2**job.attempt
        retry = self.ws.jobs.submit(
            job.kind, job.pipeline, trigger="retry", max_attempts=job.max_attempts
        )
        self.ws.jobs.update(retry.id, attempt=job.attempt + 1, created_at=time.time() + delay)

    def _close_children(self, chain_id: int, why: str, outcome: Outcome) -> None:
        for step in self.ws.jobs.list(chain_id=chain_id, status="running"):
            self.ws.jobs.finish(step.id, outcome, why)

    # --- monitoring -----------------------------------------------------------------------------

    def monitor(self) -> None:
        """Collect prediction logs and evaluate the alert rules every [monitoring].every;
        take an edited mlops.toml within a second or so, without a restart."""
        from mlops_console.durations import parse_duration
        from mlops_console.monitoring.alerts import Alerts

        alerts = Alerts(self.ws, on_event=self.event)
        self.alerts = alerts
        last = time.time()
        while True:
            due = last + parse_duration(self.ws.config.monitoring.every, "every")
            if self.stop.wait(max(0.0, min(CONFIG_POLL_S, due - time.time()))):
                break
            try:
                self.reload_config()
            except Exception as exc:  # the settings in force stay; say why the edit was not taken
                self._config_invalid(f"{type(exc).__name__}: {exc}")
            if time.time() < last + parse_duration(self.ws.config.monitoring.every, "every"):
                continue
            last = time.time()
            try:
                if self.ws.config.alerts:
                    for change in alerts.evaluate():
                        self.event({"event": "alert_change", **change})
                else:
                    self.ws.monitor.collect()
                self.ws.monitor.prune()
            except Exception as exc:  # monitoring must never take the daemon down
                self.event({"event": "monitor_error", "detail": str(exc)})
        alerts.close()

    def reload_config(self) -> None:
        """Take an edited mlops.toml (alert rules, notifiers, monitoring); an invalid edit
        keeps the previous settings and is reported once, with what is wrong."""
        before = self.ws.config
        try:
            changed = self.ws.reload_config()
        except ConfigError as exc:
            self._config_invalid(str(exc))
            return
        self._config_problem = None
        if changed:
            after = self.ws.config
            sections = [
                k for k in type(after).model_fields if getattr(before, k) != getattr(after, k)
            ]
            self.event({"event": "config_reloaded", "changed": sections})

    def _config_invalid(self, problem: str) -> None:
        """Report a problem with mlops.toml once (it is looked at every second)."""
        if problem != self._config_problem:
            self._config_problem = problem
            log.warning("mlops.toml not reloaded: %s", problem)
            self.event(
                {
                    "event": "config_invalid",
                    "detail": f"{problem} The previous settings stay in force.",
                }
            )

    # --- control API ------------------------------------------------------------------------------

    def bind(self) -> socket.socket:
        """Create the control socket 0600 from its first moment (uvicorn's own would be
        0666 until chmodded: a window in which anyone on the machine could connect)."""
        self.sock_path.unlink(missing_ok=True)  # a dead daemon's; we hold the lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.sock_path))
        except OSError as exc:
            sock.close()
            raise MlopsError(
                f"The daemon cannot create its control socket {self.sock_path} ({exc}); a "
                "Unix socket path must be under 108 bytes, so try a workspace with a shorter path."
            ) from None
        finally:
            os.umask(old)
        return sock

    def serve(self, sock: socket.socket) -> None:
        import uvicorn

        from mlops_console.automation.api import build_api
        from mlops_console.automation.peer import PeerCredProtocol

        config = uvicorn.Config(
            build_api(self),
            http=PeerCredProtocol,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        asyncio.run(server.serve(sockets=[sock]))

    def shutdown(self) -> None:
        self._server.should_exit = True

    def stopping(self) -> bool:
        """True once asked to stop: open event streams end, so the server can close."""
        server = getattr(self, "_server", None)
        return self.stop.is_set() or bool(server and server.should_exit)
