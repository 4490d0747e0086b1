"""The chain a trigger runs, as one process per chain (so a crash, a cancel or a timeout
ends it cleanly): ingest and validate → build features → train, test and gate →
register → deploy as canary → promote or roll back by its health → notify.

    python -m mlops_console.automation.chain WORKSPACE JOB_ID

Each step is a job of its own (state, log file, timings, outcome); a failed step stops
the chain and says why. Nothing half-done is left: versions that fail their gates take
no alias, and a canary that is not promoted is rolled back.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from mlops_console.automation.jobs import Job, JobStatus, Outcome
from mlops_console.errors import MlopsError
from mlops_console.process import start_time


class ChainStopped(Exception):
    """The chain stops here, and `outcome` says why (the message is for people)."""

    def __init__(self, message: str, outcome: Outcome):
        super().__init__(message)
        self.outcome = outcome


class Step:
    def __init__(self, ws, chain: Job, kind: str):
        self.ws, self.chain, self.kind = ws, chain, kind
        self.job: Job = ws.jobs.submit(
            kind,
            chain.pipeline,
            trigger=chain.trigger,
            chain_id=chain.id,
            status="running",
        )
        ws.jobs.update(self.job.id, started_at=time.time())
        self.fh = open(self.job.log_path, "a", buffering=1)  # noqa: SIM115 (closed in __exit__)

    def log(self, text: str) -> None:
        self.fh.write(time.strftime("%H:%M:%S ") + text.rstrip() + "\n")

    def __enter__(self):
        self.log(f"{self.kind}: started")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.ws.jobs.finish(
                self.job.id,
                Outcome.SUCCEEDED,
                self.detail if hasattr(self, "detail") else "done",
                getattr(self, "result", {}),
            )
            self.log(f"{self.kind}: succeeded")
        else:
            detail = (
                str(exc)
                if isinstance(exc, MlopsError | ChainStopped)
                else f"{exc_type.__name__}: {exc}"
            )
            if not isinstance(exc, MlopsError | ChainStopped):
                self.log(traceback.format_exc())
            self.ws.jobs.finish(self.job.id, outcome_of(exc), detail)
            self.log(f"{self.kind}: FAILED - {detail}")
        self.fh.close()
        return False


def run_chain(ws, job_id: int) -> dict[str, Any]:
    from mlops_console.training.runner import load_spec, train

    chain = ws.jobs.get(job_id)
    spec, _ = load_spec(ws, chain.pipeline, None)
    result: dict[str, Any] = {"steps": []}

    def check_cancel():
        """Stop if cancelled, or if this chain is no longer the daemon's to run (it ended
        the job, or its lease ran out: the daemon died, and a new one may retry it)."""
        job = ws.jobs.get(job_id)
        if job.cancel_requested:
            raise ChainStopped("cancelled on request", Outcome.CANCELLED)
        if job.status is not JobStatus.RUNNING or (
            job.lease_until and job.lease_until < time.time()
        ):
            raise ChainStopped(
                "interrupted: the daemon that ran this chain is gone", Outcome.INTERRUPTED
            )

    if spec.data.dataset:
        with Step(ws, chain, "ingest") as s:
            r = ws.data.ingest(spec.data.dataset, stage=s.log)
            s.log(r.message)
            s.result = {
                "version": r.version.version,
                "created": r.created,
                "status": r.version.status,
            }
            if r.version.status == "quarantined":
                raise ChainStopped(
                    f"{spec.data.dataset} v{r.version.version} broke its data contract and is "
                    "quarantined; the chain stops and the champion keeps serving.",
                    Outcome.QUARANTINED,
                )
            s.detail = r.message
        result["steps"].append("ingest")
    check_cancel()
    if ws.features.views():
        with Step(ws, chain, "features") as s:
            res = ws.features.materialize(stage=s.log)
            s.detail = ", ".join(f"{r['view']}: {r['rows_written']} rows" for r in res)
        result["steps"].append("features")
    check_cancel()
    with Step(ws, chain, "train") as s:
        # With an automatic deploy, the champion alias moves only once the canary is promoted.
        deploys = bool(spec.deploy.target and spec.deploy.auto)
        t = train(
            ws,
            chain.pipeline,
            stage=s.log,
            promote=not deploys,
            run_tags={"job": str(job_id)},  # so a stopped chain's run can be ended KILLED
        )
        s.result = {
            "run_id": t.run_id,
            "version": t.version.ref if t.version else None,
            "gates_passed": t.gates.get("passed"),
            "aliases": t.aliases,
        }
        if t.version is None:
            s.detail = f"trained run {t.run_id[:8]} (no register_as: nothing registered)"
        elif not t.gates.get("passed"):
            failed = [g["name"] for g in t.gates["results"] if not g["passed"]]
            raise ChainStopped(
                f"{t.version.ref} failed its gates ({', '.join(failed)}); it takes no alias "
                "and is not deployed.",
                Outcome.GATES_FAILED,
            )
        else:
            s.detail = f"registered {t.version.ref} as @{', @'.join(t.aliases)}"
        result.update(s.result)
    result["steps"].append("train")
    check_cancel()
    if spec.deploy.target and spec.deploy.auto and t.version is not None:
        name = spec.register_as or t.version.name  # a registered version has its model
        existing = {d.name: d for d in ws.deployments.list()}
        with Step(ws, chain, "deploy") as s:
            current = existing.get(name)
            if current is None or not current.running:
                rec = ws.deployments.deploy(
                    t.version.ref,
                    target=spec.deploy.target,
                    name=name,
                    options=spec.deploy.options,
                )
                s.detail = f"{name}: started with {t.version.ref} at {rec.endpoint}"
                decision = "first"
            elif not ws.deployments.can_canary(current.target, current):
                # a target with gates of its own (a fleet rolls out in gated waves): it
                # raises when its rollout fails or pauses, so the alias does not move (a
                # target no installed plugin provides fails the step above, saying so)
                ws.deployments.deploy(
                    t.version.ref, target=current.target, name=name, options=spec.deploy.options
                )
                decision = "promote"
                s.detail = f"{name}: {t.version.ref} rolled out on {current.target} (its own gates)"
            else:
                from mlops_console.automation.canary import canary_rollout

                # [deploy]: steps, minimum requests and duration, thresholds
                decision = canary_rollout(ws, name, t.version.ref, spec.deploy, s.log, check_cancel)
                shown = " -> ".join(f"{p:g}%" for p in spec.deploy.steps)
                s.detail = f"{name}: canary {t.version.ref} ({shown}) -> {decision}"
            if decision in ("promote", "first"):
                champion = ws.config.registry.champion_alias
                if champion not in ws.models.resolve(t.version.ref).aliases:
                    ws.models.promote(t.version.ref, reason=f"deployed by chain {job_id}")
            s.result = {"decision": decision}
            result["deploy"] = decision
        result["steps"].append("deploy")
    promoted = result.get("deploy") in ("promote", "first") or (
        t.version is not None
        and ws.config.registry.champion_alias in ws.models.resolve(t.version.ref).aliases
    )
    if spec.score.after_promotion and promoted:
        check_cancel()
        score_step(ws, chain, spec)
        result["steps"].append("score")
    return result


def outcome_of(exc: BaseException) -> Outcome:
    """How a chain (or a step) that raised `exc` ended: a deploy the target's own gates
    refused fails again with the same version (not retried); anything unknown is an error,
    which may pass another time."""
    from mlops_console.deploy.base import DeployRefused

    if isinstance(exc, ChainStopped):
        return exc.outcome
    return Outcome.GATES_FAILED if isinstance(exc, DeployRefused) else Outcome.ERROR


def score_step(ws, chain: Job, spec) -> dict[str, Any]:
    from mlops_console.scoring import batch_score

    with Step(ws, chain, "score") as s:
        ref = f"{spec.register_as}@{ws.config.registry.champion_alias}"
        out = batch_score(ws, ref, spec.score.input, spec.score.output)
        s.detail = (
            f"scored {out['rows']} rows of {out['input']} with {out['model']} into {out['output']}"
        )
        s.result = out
    return out


def notify(ws, event: dict[str, Any]) -> None:
    """Send how the chain ended to the notifiers `[notify]` names, as one typed Event of
    the most specific kind it lists (quarantined or gates_failed before chain_failed); a
    failing notifier is logged (in the job's log) and never fails the chain."""
    from mlops_console.events import Event, publish

    job = ws.jobs.get(event["job"])
    kind, outcome = event["event"], job.outcome.value if job.outcome else ""
    kinds = [outcome, kind] if outcome in ("quarantined", "gates_failed") else [kind]
    kind = next((k for k in kinds if k in ws.config.notify.events), kinds[-1])
    detail = event.get("detail") or job.detail
    said = {"chain_succeeded": "succeeded", "chain_cancelled": "was cancelled"}.get(kind, "stopped")
    publish(
        ws,
        Event(
            kind,
            f"chain {job.id} of pipeline {job.pipeline} {said}: {detail}",
            severity="info" if kind in ("chain_succeeded", "chain_cancelled") else "warning",
            pipeline=job.pipeline,
            job=job.id,
            detail=detail,
        ),
    )


def main() -> None:
    from mlops_console.workspace import Workspace

    root, job_id = sys.argv[1], int(sys.argv[2])
    ws = Workspace.open(root)
    job = ws.jobs.get(job_id)
    with open(job.log_path, "a", buffering=1) as fh:
        fh.write(
            time.strftime("%H:%M:%S ") + f"chain {job_id} for pipeline {job.pipeline} "
            f"(trigger: {job.trigger}, attempt {job.attempt})\n"
        )

        def finish(outcome: Outcome, detail: str, result: dict | None = None) -> None:
            # once: a daemon that ended this job (cancel, timeout, recovery) has the last word
            if not ws.jobs.finish(job_id, outcome, detail, result):
                fh.write(
                    time.strftime("%H:%M:%S ") + f"the daemon had already ended this job; "
                    f"{outcome.value} is not recorded\n"
                )

        # the daemon records this too; saying it here closes the gap in which a daemon
        # killed right after starting us would leave a chain nobody can find
        if not ws.jobs.claim_process(job_id, os.getpid(), start_time(os.getpid())):
            fh.write(time.strftime("%H:%M:%S ") + "the job is no longer running; nothing to do\n")
            ws.close()
            return
        try:
            if job.kind == "score":
                from mlops_console.training.runner import load_spec

                spec, _ = load_spec(ws, job.pipeline, None)
                score_step(ws, job, spec)
                result = {"steps": ["score"]}
            else:
                result = run_chain(ws, job_id)
            finish(Outcome.SUCCEEDED, "chain done: " + " -> ".join(result["steps"]), result)
            fh.write(time.strftime("%H:%M:%S ") + "chain succeeded\n")
            notify(
                ws,
                {"event": "chain_succeeded", "job": job_id, "pipeline": job.pipeline, **result},
            )
        except ChainStopped as exc:
            status = exc.outcome.status
            if exc.outcome is Outcome.INTERRUPTED:
                # no daemon renews our lease: the job stays running, so the next daemon
                # recovers it and queues its retry (a job ended here would not be retried)
                fh.write(time.strftime("%H:%M:%S ") + f"chain stopped: {exc}\n")
                ws.close()
                return
            finish(exc.outcome, str(exc))
            fh.write(time.strftime("%H:%M:%S ") + f"chain {status}: {exc}\n")
            notify(
                ws,
                {
                    "event": f"chain_{status}",
                    "job": job_id,
                    "pipeline": job.pipeline,
                    "detail": str(exc),
                },
            )
        except Exception as exc:
            # a user's error (a removed target plugin, a bad spec) is its message, which
            # the failed step's log already shows; anything else is a bug: its traceback
            mine = isinstance(exc, MlopsError)
            finish(outcome_of(exc), str(exc) if mine else f"{type(exc).__name__}: {exc}")
            fh.write(
                time.strftime("%H:%M:%S ") + f"chain failed: {exc}\n"
                if mine
                else traceback.format_exc()
            )
            notify(
                ws,
                {
                    "event": "chain_failed",
                    "job": job_id,
                    "pipeline": job.pipeline,
                    "detail": str(exc),
                },
            )
    ws.close()


if __name__ == "__main__":
    main()
