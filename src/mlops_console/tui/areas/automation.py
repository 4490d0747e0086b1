"""The Automation area: the daemon's schedules and watchers, and the chains of jobs;
cancel, run now, pause and resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlops_console.tui.areas.common import Action, Area, Listing, _when

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _jobs(ws: Workspace) -> Listing:
    return Listing(
        ["job", "pipeline", "status", "trigger", "created", "outcome"],
        [
            (
                str(j.id),
                [
                    str(j.id),
                    j.pipeline,
                    j.status.value,
                    j.trigger,
                    _when(j.created_at),
                    j.detail[:50],
                ],
            )
            for j in ws.jobs.list(limit=500)
            if j.kind in ("chain", "score")
        ],
    )


def _automation(ws: Workspace) -> Listing:
    listing = _jobs(ws)
    schedules = daemon_state(ws)[2]
    rows = [
        (
            f"schedule:{sc['id']}",
            [
                "watcher" if sc.get("watcher") else "schedule",
                sc["pipeline"],
                "paused" if sc["paused"] else "active",
                sc["trigger"][:30],
                "-" if sc["paused"] or sc.get("watcher") else _when(sc["next_run"]),
                sc["name"][:50],
            ],
        )
        for sc in schedules
    ]
    return Listing(listing.columns, rows + listing.rows)


def _schedule(verb: str) -> Callable[[Workspace, str], str]:
    """An action that pauses, resumes or triggers the selected schedule in the daemon."""

    def run(ws: Workspace, key: str) -> str:
        from mlops_console.automation.client import DaemonClient

        kind, _, ident = key.partition(":")
        if kind != "schedule":
            raise ValueError("select a schedule row (shown while a daemon runs)")
        DaemonClient(ws, timeout=10).call("POST", f"/schedules/{ident}/{verb}")
        return f"schedule {ident}: {verb}d" if verb != "trigger" else f"schedule {ident}: triggered"

    return run


def _job_detail(ws: Workspace, key: str) -> str:
    if key.startswith("schedule:"):
        return f"Schedule {key[9:]}: z pauses, u resumes, n runs it now (the daemon must run)."
    j = ws.jobs.get(int(key))
    steps = sorted(ws.jobs.list(chain_id=j.id), key=lambda s: s.id)
    lines = [
        f"Job {j.id} ({j.kind}) for {j.pipeline}: {j.status}",
        j.detail,
        "",
        "Steps:",
    ]
    lines += [f"  {s.kind:9} {s.status:10} {s.detail[:70]}" for s in steps]
    lines += ["", "Log (tail):", ws.jobs.logs(j.id, 40)]
    return "\n".join(lines)


def daemon_state(ws: Workspace) -> tuple[bool, str, list[dict[str, Any]]]:
    """(running, one line, schedules) of the workspace's daemon."""
    if not (ws.state / "daemon.sock").exists():  # no daemon: do not even import httpx
        return False, "not running: press U to start one (or `mlops up`)", []
    from mlops_console.automation.client import DaemonClient

    client = DaemonClient(ws, timeout=2.0)
    if not client.available():
        return False, "not running: press U to start one (or `mlops up`)", []
    try:
        st = client.call("GET", "/status")
        schedules = client.call("GET", "/schedules").get("schedules", [])
    except Exception as exc:  # the daemon went away meanwhile
        return False, f"not answering: {exc}", []
    for w in st.get("watchers") or []:  # shown with the schedules: they trigger chains too
        schedules.append(
            {
                "id": f"watch-{w['pipeline']}",
                "pipeline": w["pipeline"],
                "name": f"watch {w['pattern']}",
                "trigger": "new files",
                "next_run": None,
                "paused": False,
                "watcher": True,
            }
        )
    return True, f"running, pid {st.get('pid')}", schedules


def _run_now(ws: Workspace, key: str) -> str:
    if key.startswith("schedule:"):
        return _schedule("trigger")(ws, key)
    j = ws.jobs.get(int(key))
    new = ws.jobs.submit("chain", j.pipeline, trigger="console")
    if new.trigger != "console":  # one queued chain per pipeline: it runs soon anyway
        return f"chain {new.id} of {j.pipeline} is queued already"
    return f"queued chain {new.id} of {j.pipeline}"


def _cancel(ws: Workspace, key: str) -> str:
    if not key.isdigit():
        raise ValueError("select a job row to cancel (z pauses a schedule)")
    j = ws.jobs.cancel(int(key))
    return f"job {key}: {j.status}" + (" (cancel requested)" if j.cancel_requested else "")


AREA = Area(
    "automation",
    "Automation",
    "Schedules and chains of the daemon: state, steps, logs.",
    _automation,
    _job_detail,
    [
        Action("c", "job: cancel", "Cancel the selected job", _cancel),
        Action("n", "job: run now", "Run the selected job's pipeline (or schedule) now", _run_now),
        Action("z", "schedule: pause", "Pause the selected schedule", _schedule("pause")),
        Action("u", "schedule: resume", "Resume the selected schedule", _schedule("resume"), False),
    ],
)
