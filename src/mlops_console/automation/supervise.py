"""The daemon's supervision of local model servers: a server that should run but does
not (after a crash, or a reboot while the daemon was down) is started again, with its
bundle re-verified against the registry, with backoff, at most RESTART_LIMIT times in
RESTART_WINDOW; then the daemon gives up and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_console import process

if TYPE_CHECKING:
    from mlops_console.deploy.records import Deployment
    from mlops_console.workspace import Workspace

log = logging.getLogger(__name__)

SUPERVISE_EVERY = 2.0  # seconds between looks at the local model servers
RESTART_LIMIT = 5  # restarts of one server within RESTART_WINDOW, then the daemon gives up
RESTART_WINDOW = 600.0


class Supervisor:
    def __init__(
        self, ws: Workspace, event: Callable[[dict[str, Any]], None], stop: threading.Event
    ):
        self.ws = ws
        self.event = event
        self.stop = stop
        self.state: dict[str, dict[str, Any]] = {}  # deployment -> restarts, backoff

    def targets(self) -> set[str]:
        """The targets whose servers the daemon keeps running (the supervised capability)."""
        from mlops_console.deploy.base import Capability
        from mlops_console.plugins import load_plugins

        return {
            kind
            for kind, cls in load_plugins().deploy_targets().items()
            if Capability.SUPERVISED in cls.capabilities
        }

    def resupervise(self) -> None:
        """Restart supervised deployments that should run but do not (after a crash or reboot)."""
        supervised = self.targets()
        for d in self.ws.deployments.list():
            if not d.running or d.target not in supervised:
                continue
            live = self.ws.deployments.target(d.target).get(d.name, d.config)
            if live["status"] != "running":
                self.restart(d)

    def restart(self, d: Deployment, **about: Any) -> bool:
        """Start deployment `d`'s server again with its bundle re-verified against the
        registry's digest (or exported again) and that digest passed to the server."""
        try:
            mv = self.ws.models.resolve(d.ref)
            self.ws.deployments.target(d.target).create(
                d.name,
                self.ws.deployments.bundle_dir(d.name, mv),  # verified, or exported again
                d.config,
                digest=mv.artifact_hash,
            )
            if d.canary_ref is not None:  # the canary it held comes back too
                cv = self.ws.models.resolve(d.canary_ref)
                self.ws.deployments.target(d.target).update(
                    d.name,
                    self.ws.deployments.bundle_dir(d.name, cv),
                    d.config,
                    role="canary",
                    percent=float(d.canary_percent or 0),
                    digest=cv.artifact_hash,
                )
        except Exception as exc:  # reported as an event; the next look tries again
            log.warning("restarting deployment %s failed: %s", d.name, exc)
            self.event(
                {
                    "event": "resupervise_failed",
                    "deployment": d.name,
                    "detail": str(exc),
                    **about,
                }
            )
            return False
        self.event({"event": "resupervised", "deployment": d.name, **about})
        return True

    def run(self) -> None:
        """Every SUPERVISE_EVERY seconds, restart a local server that died while the daemon
        runs: with backoff, at most RESTART_LIMIT times in RESTART_WINDOW, then give up."""
        while not self.stop.wait(SUPERVISE_EVERY):
            try:
                self.once()
            except Exception as exc:  # supervision must never take the daemon down
                log.warning("supervision: %s", exc)
                self.event({"event": "supervision_error", "detail": str(exc)})

    def once(self) -> None:
        now = time.monotonic()
        supervised = self.targets()
        for d in self.ws.deployments.list():
            if not d.running or d.target not in supervised:
                self.state.pop(d.name, None)
                continue
            target = self.ws.deployments.target(d.target)
            state = self.state.get(d.name)
            if state is None or state["updated_at"] != d.updated_at:
                # new, or deployed again since: a fresh restart budget
                state = {"updated_at": d.updated_at, "restarts": [], "next": 0.0}
                state.update(dead_since=None, gave_up=False)
                self.state[d.name] = state
            live = target.get(d.name, d.config)
            pid = live.get("pid")
            if pid is not None:
                with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
                    os.waitpid(pid, os.WNOHANG)  # a server this daemon started, now a zombie
            if live["status"] == "running" or (pid is not None and process.is_alive(pid)):
                state["dead_since"] = None  # serving, or alive and starting (or hung: its
                continue  # own watchdog fails readiness and restarts its scoring loop)
            if state["dead_since"] is None:
                # seen dead once: look again before acting, so a `deployments stop` that
                # is between ending the server and recording it is not undone
                state["dead_since"] = now
                continue
            if state["gave_up"] or now < state["next"]:
                continue
            state["restarts"] = [t for t in state["restarts"] if now - t < RESTART_WINDOW]
            if len(state["restarts"]) >= RESTART_LIMIT:
                state["gave_up"] = True
                self.event(
                    {
                        "event": "supervision_gave_up",
                        "deployment": d.name,
                        "detail": f"{d.name} died {RESTART_LIMIT + 1} times within "
                        f"{RESTART_WINDOW / 60:.0f} minutes; the daemon no longer restarts it. "
                        f"`mlops deployments logs {d.name}` shows why; deploying it again "
                        "resumes supervision.",
                    }
                )
                continue
            fresh = self.ws.deployments.get(d.name)
            if not fresh.running or fresh.updated_at != d.updated_at:
                continue  # stopped or redeployed meanwhile
            state["restarts"].append(now)
            attempt = len(state["restarts"])
            if self.restart(d, attempt=attempt):
                state["dead_since"] = None
            # the next restart waits 1, 2, 4, 8 ... s (at most 60): a server that dies at
            # once does not spin
            state["next"] = time.monotonic() + min(2 ** (attempt - 1), 60)
