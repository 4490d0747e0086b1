"""The daemon's schedules, rebuilt from the pipeline specs at every start.

APScheduler keeps its jobs in memory only: its SQLAlchemy job store unpickled whatever
it found in `registry.db`, so a workspace handed over with its `.mlops/` ran a planted
pickle on `mlops up`. What has to survive a restart is ours, in plain columns of
`schedule_state`: each schedule's last fire time, so that a run missed while the daemon
was down happens once at start (coalesced, within the misfire grace), and a pause or
resume given with `mlops schedules pause|resume`.

A pause or resume given on the command line holds until the spec's own `paused` is
edited: whichever was changed last wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlops_console.errors import NotFound

log = logging.getLogger(__name__)

# A run missed by more than this (the daemon was down) is skipped, not made up; a run
# missed by less happens once at start, however many were missed (coalescing).
MISFIRE_GRACE_S = 3600


@dataclass(frozen=True)
class Schedule:
    """One cadence of one pipeline, as its spec gives it."""

    id: str  # PIPELINE:cron, PIPELINE:interval, PIPELINE:score-cron, PIPELINE:score-interval
    pipeline: str
    kind: str  # what it submits: "chain" or "score"
    cadence: str  # "cron" or "interval"
    value: str  # the crontab or the interval, as written
    spec_paused: bool

    @property
    def name(self) -> str:
        what = "score" if self.kind == "score" else "retrain"
        if self.cadence == "interval":
            return f"{what} {self.pipeline} every {self.value}"
        return f"{what} {self.pipeline} at '{self.value}'"


@dataclass(frozen=True)
class ScheduleState:
    id: str
    last_run_at: float | None
    paused: bool | None
    paused_spec: bool | None


def schedules_of(pipelines: dict[str, Any]) -> list[Schedule]:
    """Every cadence the specs ask for."""
    out = []
    for name, spec in pipelines.items():
        sch = spec.schedule
        for kind, cadence, value, paused in (
            ("chain", "cron", sch.cron, sch.paused),
            ("chain", "interval", sch.interval, sch.paused),
            ("score", "cron", spec.score.cron, False),
            ("score", "interval", spec.score.interval, False),
        ):
            if value:
                sid = f"{name}:{cadence}" if kind == "chain" else f"{name}:score-{cadence}"
                out.append(Schedule(sid, name, kind, cadence, value, paused))
    return out


class ScheduleStore:
    """`schedule_state`: one row per schedule id, written by the daemon."""

    def __init__(self, ws):
        self.ws = ws

    def all(self) -> dict[str, ScheduleState]:
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, last_run_at, paused, paused_spec FROM schedule_state"
            ).mappings()
            return {
                r["id"]: ScheduleState(
                    r["id"],
                    r["last_run_at"],
                    None if r["paused"] is None else bool(r["paused"]),
                    None if r["paused_spec"] is None else bool(r["paused_spec"]),
                )
                for r in rows
            }

    def record_run(self, sid: str, at: float) -> None:
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO schedule_state (id, last_run_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET last_run_at = max(coalesce(last_run_at, 0), "
                "excluded.last_run_at), updated_at = excluded.updated_at",
                (sid, at, time.time()),
            )

    def set_paused(self, sid: str, paused: bool, spec_paused: bool) -> None:
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO schedule_state (id, paused, paused_spec, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET paused = excluded.paused, "
                "paused_spec = excluded.paused_spec, updated_at = excluded.updated_at",
                (sid, paused, spec_paused, time.time()),
            )


def is_paused(schedule: Schedule, state: ScheduleState | None) -> bool:
    """The spec's `paused`, unless a pause or resume was given since it last changed."""
    if state is not None and state.paused is not None and state.paused_spec == schedule.spec_paused:
        return state.paused
    return schedule.spec_paused


class Scheduler:
    """APScheduler with a memory job store, built from the specs, its state in our table."""

    def __init__(self, ws, fire: Callable[[Schedule], None], on_event: Callable[[dict], None]):
        self.ws = ws
        self.fire = fire
        self.on_event = on_event
        self.store = ScheduleStore(ws)
        self.by_id: dict[str, Schedule] = {}
        self._lock = threading.Lock()
        self._aps: Any = None  # APScheduler 3's BackgroundScheduler (untyped)

    def start(self, pipelines: dict[str, Any]) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
        from apscheduler.schedulers.background import BackgroundScheduler

        # coalesce + grace: after downtime a missed run happens once, not once per miss
        self._aps = BackgroundScheduler(
            jobstores={"default": {"type": "memory"}},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": MISFIRE_GRACE_S,
                "max_instances": 1,
            },
        )
        self._aps.add_listener(self._ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        self._aps.start()
        states = self.store.all()
        for schedule in schedules_of(pipelines):
            self.by_id[schedule.id] = schedule
            trigger = _trigger(schedule)
            state = states.get(schedule.id)
            # None is APScheduler's way of adding a paused job
            next_run = None if is_paused(schedule, state) else self._next_run(trigger, state)
            self._aps.add_job(
                self._fire,
                trigger,
                args=[schedule.id],
                id=schedule.id,
                name=schedule.name,
                next_run_time=next_run,
            )

    def _next_run(self, trigger, state: ScheduleState | None) -> datetime | None:
        """The first fire time after the last run: in the past when runs were missed while
        the daemon was down, which APScheduler then runs once (coalesced) if within grace."""
        tz = self._aps.timezone
        now = datetime.now(tz)
        last = (
            datetime.fromtimestamp(state.last_run_at, tz)
            if state is not None and state.last_run_at is not None
            else None
        )
        return trigger.get_next_fire_time(last, now)

    def _fire(self, sid: str) -> None:
        schedule = self.by_id[sid]
        self.fire(schedule)

    def _ran(self, event) -> None:
        """Remember the fire time (run or missed) so a restart knows what is still due."""
        at = event.scheduled_run_time.timestamp()
        try:
            self.store.record_run(event.job_id, at)
        except Exception as exc:  # the schedule keeps running; the next start may run it again
            log.warning("schedule %s: its last run could not be recorded: %s", event.job_id, exc)
            self.on_event({"event": "schedule_error", "schedule": event.job_id, "detail": str(exc)})
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED

        if event.code == EVENT_JOB_MISSED:
            self.on_event(
                {
                    "event": "schedule_missed",
                    "schedule": event.job_id,
                    "detail": f"the run due at {time.ctime(at)} was missed by more than "
                    f"{MISFIRE_GRACE_S} s and is skipped",
                }
            )
        elif event.code == EVENT_JOB_ERROR:
            log.warning("schedule %s: %s", event.job_id, event.exception)
            self.on_event(
                {
                    "event": "schedule_error",
                    "schedule": event.job_id,
                    "detail": str(event.exception),
                }
            )

    def get(self, sid: str) -> Schedule:
        schedule = self.by_id.get(sid)
        if schedule is None:
            raise NotFound(f"No schedule {sid!r}; `mlops schedules list` shows them.")
        return schedule

    def pause(self, sid: str) -> None:
        schedule = self.get(sid)
        with self._lock:
            self._aps.pause_job(sid)
            self.store.set_paused(sid, True, schedule.spec_paused)

    def resume(self, sid: str) -> None:
        schedule = self.get(sid)
        with self._lock:
            self._aps.resume_job(sid)
            self.store.set_paused(sid, False, schedule.spec_paused)

    def list(self) -> list[dict[str, Any]]:
        states = self.store.all()
        out = []
        for job in self._aps.get_jobs() if self._aps else []:
            schedule = self.by_id[job.id]
            state = states.get(job.id)
            out.append(
                {
                    "id": job.id,
                    "pipeline": schedule.pipeline,
                    "kind": schedule.kind,
                    "name": job.name,
                    "trigger": str(job.trigger),
                    "next_run": job.next_run_time.timestamp() if job.next_run_time else None,
                    "last_run": state.last_run_at if state else None,
                    "paused": job.next_run_time is None,
                }
            )
        return out

    def shutdown(self, wait: bool = False) -> None:
        if self._aps is not None and self._aps.running:
            self._aps.shutdown(wait=wait)


def _trigger(schedule: Schedule):
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    from mlops_console.durations import parse_duration

    if schedule.cadence == "cron":
        return CronTrigger.from_crontab(schedule.value)
    return IntervalTrigger(seconds=parse_duration(schedule.value, "interval"))
