"""`ws.jobs`: the job queue and history, kept in the workspace database."""

from __future__ import annotations

import builtins
import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, NotFound

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

log = logging.getLogger(__name__)

COLS = (
    "id, kind, pipeline, chain_id, status, trigger, attempt, max_attempts, cancel_requested, "
    "detail, result, log_path, pid, created_at, started_at, ended_at, outcome, pid_start, "
    "lease_until"
)
LEASE_SECONDS = 60.0  # a chain whose daemon has not renewed its lease for this long stops


# `JobStore.page` sorts: a name -> its column
JOB_SORTS = {
    "id": "id",
    "pipeline": "pipeline COLLATE NOCASE",
    "status": "status",
    "trigger": "trigger COLLATE NOCASE",
    "created_at": "created_at",
    "detail": "detail COLLATE NOCASE",
}


class JobStatus(StrEnum):
    """Where a job is: waiting, running, or ended (and how, in broad strokes)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


FINAL = tuple(s.value for s in JobStatus if s.final)  # plain strings: written into SQL


class Outcome(StrEnum):
    """How a job ended, said by whoever knows: the chain (quarantine, gates) or the daemon
    (cancel, timeout, a crash). The retry decision reads this, never the detail text."""

    SUCCEEDED = "succeeded"
    QUARANTINED = "quarantined"  # the data broke its contract: the same input fails again
    GATES_FAILED = "gates_failed"  # the model failed its gates: the same input fails again
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # the daemon died while it ran; its chain was ended
    ERROR = "error"  # anything else: a crash, an exception, a server that would not start

    @property
    def status(self) -> JobStatus:
        if self is Outcome.SUCCEEDED:
            return JobStatus.SUCCEEDED
        return JobStatus.CANCELLED if self is Outcome.CANCELLED else JobStatus.FAILED

    @property
    def retryable(self) -> bool:
        """Another try may pass: the cause was the moment, not the input."""
        return self in (Outcome.TIMED_OUT, Outcome.INTERRUPTED, Outcome.ERROR)


@dataclass
class Job:
    """A job as `ws.jobs` gives it: a chain (or a score job) or one of a chain's steps."""

    id: int
    kind: str  # chain, score; a step: ingest, features, train, deploy, score
    pipeline: str
    chain_id: int | None  # the chain a step belongs to
    status: JobStatus
    trigger: str  # schedule, watch, manual, retry, recovery, console, alert N
    attempt: int
    max_attempts: int
    cancel_requested: bool
    detail: str  # how it went, in a sentence or two
    result: dict[str, Any]
    log_path: str
    pid: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    outcome: Outcome | None  # None until it ends (stored as "")
    pid_start: int | None  # the process's start time, so a reused pid is not it
    lease_until: float | None
    # how long it ran, or has run when it was read; None before it starts
    seconds: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """A row of `SELECT {COLS}`, read by column name."""
        started, ended = row["started_at"], row["ended_at"]
        return cls(
            id=row["id"],
            kind=row["kind"],
            pipeline=row["pipeline"],
            chain_id=row["chain_id"],
            status=JobStatus(row["status"]),
            trigger=row["trigger"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            cancel_requested=bool(row["cancel_requested"]),
            detail=row["detail"],
            result=json.loads(row["result"] or "{}"),
            log_path=row["log_path"],
            pid=row["pid"],
            created_at=row["created_at"],
            started_at=started,
            ended_at=ended,
            outcome=Outcome(row["outcome"]) if row["outcome"] else None,
            pid_start=row["pid_start"],
            lease_until=row["lease_until"],
            seconds=None if started is None else (ended or time.time()) - started,
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as the CLI's `--json` and the daemon's API show it."""
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "pipeline": self.pipeline,
            "chain_id": self.chain_id,
            "status": self.status.value,
            "trigger": self.trigger,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "cancel_requested": self.cancel_requested,
            "detail": self.detail,
            "result": self.result,
            "log_path": self.log_path,
            "pid": self.pid,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome.value if self.outcome is not None else "",
            "pid_start": self.pid_start,
            "lease_until": self.lease_until,
        }
        if self.seconds is not None:
            d["seconds"] = self.seconds
        return d


class JobStore:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.log_dir = ws.state / "logs" / "jobs"

    def submit(
        self,
        kind: str,
        pipeline: str = "",
        trigger: str = "manual",
        chain_id: int | None = None,
        max_attempts: int = 1,
        status: str = "queued",
    ) -> Job:
        """Queue a job (or record a chain's step, `status="running"`); a chain for a
        pipeline that already has one queued is that one."""
        now = time.time()
        with self.ws.db.write() as conn:
            if kind == "chain" and status == "queued":
                dup = conn.exec_driver_sql(
                    "SELECT id FROM job WHERE kind = 'chain' AND pipeline = ? AND status = 'queued'",
                    (pipeline,),
                ).first()
                if dup:  # a burst of triggers makes one chain
                    return self.get(dup[0])
            job_id = conn.exec_driver_sql(
                "INSERT INTO job (kind, pipeline, chain_id, status, trigger, attempt, max_attempts, "
                "cancel_requested, detail, result, log_path, created_at) VALUES (?, ?, ?, ?, ?, 1, ?, 0, '', '{}', '', ?)",
                (kind, pipeline, chain_id, status, trigger, max_attempts, now),
            ).lastrowid
            log = self.log_dir / f"job-{job_id}.log"
            conn.exec_driver_sql("UPDATE job SET log_path = ? WHERE id = ?", (str(log), job_id))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        assert job_id is not None  # an INSERT always sets it
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        with self.ws.db.read() as conn:
            row = (
                conn.exec_driver_sql(f"SELECT {COLS} FROM job WHERE id = ?", (int(job_id),))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"No job {job_id}. `mlops jobs list` shows them.")
        return Job.from_row(row)

    def list(
        self,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        chain_id: int | None = None,
    ) -> builtins.list[Job]:
        """The newest jobs first (at most `limit`), of one status, pipeline or chain."""
        where: builtins.list[str] = ["1=1"]
        args: builtins.list[Any] = []
        if status:
            where.append("status = ?")
            args.append(status)
        if pipeline:
            where.append("pipeline = ?")
            args.append(pipeline)
        if chain_id is not None:
            where.append("chain_id = ?")
            args.append(chain_id)
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {COLS} FROM job WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).mappings()
            return [Job.from_row(r) for r in rows]

    def page(
        self,
        text: str = "",
        sort: str | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
        kinds: tuple[str, ...] = ("chain", "score"),
    ) -> tuple[builtins.list[Job], int]:
        """One page of the jobs of `kinds` whose id, pipeline, status, trigger, outcome or
        detail contains `text` (any case), sorted by a `JOB_SORTS` name (None: the newest
        first; a job whose id is `text` before all), and how many match in all."""
        from mlops_console.tracking.runs import like

        where = f"kind IN ({', '.join('?' * len(kinds))})"
        args: builtins.list[Any] = [*kinds]
        needle = text.strip().lower()
        if needle:
            # statuses and outcomes are a few words: match them here, not row by row
            words = [v for v in (*JobStatus, *Outcome) if needle in v.value]
            matches = [f"{c} LIKE ? ESCAPE '\\'" for c in ("pipeline", "trigger", "detail")]
            args += [like(needle)] * len(matches)
            if any(ch.isdigit() for ch in needle):  # an id is digits only
                matches.append("CAST(id AS TEXT) LIKE ? ESCAPE '\\'")
                args.append(like(needle))
            if words:
                marks = ", ".join("?" * len(words))
                matches.append(f"status IN ({marks}) OR outcome IN ({marks})")
                args += [w.value for w in words] * 2
            where += f" AND ({' OR '.join(matches)})"
        way = "DESC" if descending or sort is None else "ASC"
        order = f"{JOB_SORTS.get(sort or 'id', 'id')} {way}, id {way}"
        if (
            needle.isascii() and needle.isdigit()
        ):  # the job of that id first, then those that contain it
            order = f"id = {int(needle)} DESC, {order}"
        count = f"SELECT count(*) FROM job WHERE {where}"
        with self.ws.db.read() as conn:
            if needle:  # the matches are counted in the same scan that finds the page
                found = conn.exec_driver_sql(
                    f"SELECT id, count(*) OVER () FROM job WHERE {where} ORDER BY {order} "
                    "LIMIT ? OFFSET ?",
                    (*args, int(limit), int(offset)),
                ).all()
                ids = [i for i, _ in found]
                total = found[0][1] if found else conn.exec_driver_sql(count, tuple(args)).scalar()
            else:  # newest first walks the ids backwards and stops after one page
                total = conn.exec_driver_sql(count, tuple(args)).scalar()
                ids = conn.exec_driver_sql(
                    f"SELECT id FROM job WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                    (*args, int(limit), int(offset)),
                ).scalars()
            rows = conn.exec_driver_sql(
                f"SELECT {COLS} FROM job WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids)
            ).mappings()
        by_id = {r["id"]: Job.from_row(r) for r in rows}
        return [by_id[i] for i in ids], int(total)

    def claim_next(self) -> Job | None:
        """Take the oldest queued chain (atomically: one worker gets it)."""
        with self.ws.db.write() as conn:
            row = conn.exec_driver_sql(
                "SELECT id FROM job WHERE status = 'queued' AND kind IN ('chain', 'score') AND created_at <= ? "
                "ORDER BY id LIMIT 1",
                (time.time(),),
            ).first()
            if row is None:
                return None
            conn.exec_driver_sql(
                "UPDATE job SET status = 'running', started_at = ? WHERE id = ?",
                (time.time(), row[0]),
            )
        return self.get(row[0])

    def update(self, job_id: int, **fields: Any) -> None:
        if "result" in fields:
            fields["result"] = json.dumps(fields["result"], default=str)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(f"UPDATE job SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def finish(
        self, job_id: int, outcome: Outcome, detail: str = "", result: dict | None = None
    ) -> bool:
        """Write the job's final state, once: False (and nothing written) if the chain or
        the daemon has already ended it."""
        outcome = Outcome(outcome)
        with self.ws.db.write() as conn:
            done = conn.exec_driver_sql(
                "UPDATE job SET status = ?, outcome = ?, detail = ?, ended_at = ?, result = ?, "
                f"lease_until = NULL WHERE id = ? AND status NOT IN {FINAL!r}",
                (
                    outcome.status.value,
                    outcome.value,
                    detail[:4000],
                    time.time(),
                    json.dumps(result or {}, default=str),
                    job_id,
                ),
            ).rowcount
        return done == 1

    def claim_process(self, job_id: int, pid: int, pid_start: int | None) -> bool:
        """Record the process that runs a job; False if the job no longer runs."""
        with self.ws.db.write() as conn:
            return (
                conn.exec_driver_sql(
                    "UPDATE job SET pid = ?, pid_start = ?, lease_until = ? "
                    "WHERE id = ? AND status = 'running'",
                    (pid, pid_start, time.time() + LEASE_SECONDS, job_id),
                ).rowcount
                == 1
            )

    def renew_leases(self, job_ids: builtins.list[int]) -> None:
        if not job_ids:
            return
        marks = ", ".join("?" for _ in job_ids)
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                f"UPDATE job SET lease_until = ? WHERE status = 'running' AND id IN ({marks})",
                (time.time() + LEASE_SECONDS, *job_ids),
            )

    def kill_runs(self, chain_id: int) -> int:
        """End the tracking runs a stopped chain left RUNNING as KILLED."""
        with self.ws.db.write() as conn:
            return conn.exec_driver_sql(
                "UPDATE run SET status = 'KILLED', end_time = ? WHERE status = 'RUNNING' AND "
                "id IN (SELECT run_id FROM tag WHERE key = 'job' AND value = ?)",
                (time.time(), str(chain_id)),
            ).rowcount

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job at once, or ask a running one's daemon to end it."""
        job = self.get(job_id)
        if job.status.final:
            raise Conflict(f"Job {job_id} has already ended ({job.status}).")
        with self.ws.db.write() as conn:
            if job.status is JobStatus.QUEUED:
                conn.exec_driver_sql(
                    "UPDATE job SET status = 'cancelled', outcome = 'cancelled', ended_at = ?, "
                    "detail = 'cancelled before it started' WHERE id = ? AND status = 'queued'",
                    (time.time(), job_id),
                )
            else:
                conn.exec_driver_sql("UPDATE job SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def logs(self, job_id: int, tail: int = 200) -> str:
        job = self.get(job_id)
        parts = []
        for j in [job, *sorted(self.list(chain_id=job_id, limit=100), key=lambda x: x.id)]:
            try:
                with open(j.log_path, errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            if j is not job:
                parts.append(f"--- step {j.kind} (job {j.id}, {j.status}) ---")
            parts.append(text.rstrip())
        return "\n".join("\n".join(parts).splitlines()[-tail:])

    def undo_half_deploy(self, chain: Job) -> None:
        """A chain killed while judging a canary leaves it loaded: roll it back, so no
        deployment stays between two versions."""
        steps = self.list(chain_id=chain.id, limit=100)
        if not any(s.kind == "deploy" for s in steps):
            return
        for d in self.ws.deployments.list():
            try:
                if d.canary_version is not None:
                    self.ws.deployments.rollback(d.name, reason=f"chain {chain.id} was interrupted")
                    continue
                # killed between loading the canary and recording it: the server knows
                target = self.ws.deployments.target(d.target)
                if (target.status(d.name, d.config) or {}).get("canary"):
                    target.rollback(d.name, d.config)
            except Exception as exc:  # a stopped server has no canary left to drop
                log.warning("chain %s: could not drop the canary of %s: %s", chain.id, d.name, exc)

    def running(self) -> builtins.list[Job]:
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {COLS} FROM job WHERE status = 'running'"
            ).mappings()
            return [Job.from_row(r) for r in rows]

    def recover(self) -> builtins.list[Job]:
        """After a crash: jobs left running are failed; chains that may retry are queued
        again. The daemon ends their orphaned processes first (`Daemon.end_orphans`), so a
        chain and its retry never run at the same time."""
        out = []
        for job in self.running():
            if not self.finish(
                job.id, Outcome.INTERRUPTED, "interrupted: the daemon stopped while this job ran"
            ):
                continue  # it ended meanwhile, and said how
            out.append(job)
            if job.kind == "chain":
                self.kill_runs(job.id)  # the tracking run it was writing ends KILLED
                self.undo_half_deploy(job)
            if job.kind == "chain" and job.attempt < job.max_attempts:
                retry = self.submit(
                    "chain", job.pipeline, trigger="recovery", max_attempts=job.max_attempts
                )
                self.update(retry.id, attempt=job.attempt + 1)
        return out
