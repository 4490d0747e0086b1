"""The Automation area: the daemon's schedules and watchers, and the chains of jobs;
cancel, run now, pause and resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from mlops_console.tui.areas.common import Action, Area, Listing, Query, _when

if TYPE_CHECKING:
    from mlops_console.automation.jobs import Job
    from mlops_console.workspace import Workspace

COLUMNS = ["job", "pipeline", "status", "trigger", "created", "outcome"]
# the listing's columns -> `JobStore.page` sorts
SORTS = {
    "job": "id",
    "pipeline": "pipeline",
    "status": "status",
    "trigger": "trigger",
    "created": "created_at",
    "outcome": "detail",
}


def _job_row(j: Job) -> tuple[str, list[str]]:
    return (
        str(j.id),
        [
            str(j.id),
            j.pipeline,
            j.status.value,
            j.trigger,
            _when(j.created_at),
            escape(j.detail[:50]),  # an error's text, never read as markup
        ],
    )


def _jobs(ws: Workspace, query: Query | None = None) -> Listing:
    """A page of chains and score jobs (the newest first by default), with the count of
    those matching."""
    query = query or Query()
    jobs, total = ws.jobs.page(
        query.text,
        SORTS.get(query.sort or "job", "id"),
        query.descending if query.sort else True,
        query.offset,
        query.limit,
    )
    return Listing(COLUMNS, [_job_row(j) for j in jobs], total=total)


def _schedule_rows(ws: Workspace, text: str = "") -> list[tuple[str, list[str]]]:
    """The daemon's schedules and watchers whose cells contain `text` (any case)."""
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
        for sc in daemon_state(ws)[2]
    ]
    needle = text.strip().lower()
    return [r for r in rows if not needle or any(needle in c.lower() for c in [r[0], *r[1]])]


def _page(ws: Workspace, query: Query) -> Listing:
    """Schedules and watchers (a few, from the daemon) on top, then the jobs: one page of
    both as if they were one list, filtered, with the true total of the two."""
    schedules = _schedule_rows(ws, query.text)
    shown = schedules[query.offset : query.offset + query.limit]
    jobs = _jobs(
        ws,
        Query(
            query.text,
            query.sort,
            query.descending,
            max(0, query.offset - len(schedules)),
            query.limit - len(shown),
        ),
    )
    return Listing(COLUMNS, shown + jobs.rows, total=len(schedules) + (jobs.total or 0))


def _automation(ws: Workspace) -> Listing:
    return _page(ws, Query())


def is_watcher(key: str) -> bool:
    """A watcher's row (`schedule:watch-<pipeline>`): schedule ids always hold a colon
    (`churn:interval`), watchers' never, so a pipeline called watch-x is no watcher."""
    return key.startswith("schedule:watch-") and ":" not in key[len("schedule:") :]


def _is_job(key: str) -> bool:
    return key.isdigit()


def _is_schedule(key: str) -> bool:
    """A schedule the daemon can pause, resume or trigger (not a watcher)."""
    return key.startswith("schedule:") and not is_watcher(key)


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
    if is_watcher(key):
        return (
            f"Watcher of {key[len('schedule:watch-') :]}: new data files queue a chain "
            "(while the daemon runs); it cannot be paused: set [schedule] on_data_change = "
            "false in its pipeline to stop it."
        )
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
    return escape("\n".join(lines))  # errors and logs as they are, never read as markup


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


def _ask_cancel(ws: Workspace, key: str) -> str:
    j = ws.jobs.get(int(key))
    return f"Cancel job {j.id} ({j.kind} of {j.pipeline}, {j.status.value})?"


def _ask_run_now(ws: Workspace, key: str) -> str:
    if key.startswith("schedule:"):
        return f"Run schedule {key[len('schedule:') :]} now?"
    j = ws.jobs.get(int(key))
    return f"Queue a new chain of {j.pipeline} now (job {j.id} was a {j.kind}, {j.status.value})?"


def _ask_schedule(verb: str) -> Callable[[Workspace, str], str]:
    return lambda ws, key: f"{verb} schedule {key[len('schedule:') :]}?"


AREA = Area(
    "automation",
    "Automation",
    "Schedules and chains of the daemon: state, steps, logs.",
    _automation,
    _job_detail,
    [
        Action(
            "c",
            "job: cancel",
            "Cancel the selected job",
            _cancel,
            applies=_is_job,
            confirm=_ask_cancel,
        ),
        Action(
            "n",
            "job: run now",
            "Run the selected job's pipeline (or schedule) now",
            _run_now,
            applies=lambda key: _is_job(key) or _is_schedule(key),
            confirm=_ask_run_now,
        ),
        Action(
            "z",
            "schedule: pause",
            "Pause the selected schedule",
            _schedule("pause"),
            applies=_is_schedule,
            confirm=_ask_schedule("Pause"),
        ),
        Action(
            "u",
            "schedule: resume",
            "Resume the selected schedule",
            _schedule("resume"),
            False,
            applies=_is_schedule,
            confirm=_ask_schedule("Resume"),
        ),
    ],
    page=_page,
)
