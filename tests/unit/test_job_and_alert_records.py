"""ws.jobs and ws.alerts read rows into records whose to_dict() is the JSON the CLI and the
daemon's API have always given: the same keys, in the same order, with the same values."""

from __future__ import annotations

import json
import time

import pytest

from mlops_console.automation.jobs import Job, JobStatus, Outcome
from mlops_console.errors import Conflict, NotFound
from mlops_console.monitoring.alert_records import Alert, AlertEvent, AlertState

JOB_KEYS = [
    "id",
    "kind",
    "pipeline",
    "chain_id",
    "status",
    "trigger",
    "attempt",
    "max_attempts",
    "cancel_requested",
    "detail",
    "result",
    "log_path",
    "pid",
    "created_at",
    "started_at",
    "ended_at",
    "outcome",
    "pid_start",
    "lease_until",
]
ALERT_KEYS = [
    "id",
    "rule",
    "deployment",
    "measure",
    "severity",
    "state",
    "value",
    "threshold",
    "window",
    "detail",
    "action",
    "action_result",
    "opened_at",
    "updated_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
]


def test_a_queued_job_has_no_outcome_and_no_seconds(ws):
    job = ws.jobs.submit("chain", "p", trigger="schedule", max_attempts=2)
    assert isinstance(job, Job) and job.status is JobStatus.QUEUED and job.outcome is None
    assert ws.jobs.submit("chain", "p") == job  # a burst of triggers is one chain
    d = job.to_dict()
    assert list(d) == JOB_KEYS  # no "seconds": it has not started
    assert d["status"] == "queued" and d["outcome"] == "" and d["result"] == {}
    assert type(d["status"]) is str and type(d["outcome"]) is str  # plain JSON values
    assert d["log_path"].endswith(f"job-{job.id}.log") and d["cancel_requested"] is False


def test_a_finished_job_with_its_step(ws):
    ws.jobs.submit("chain", "p")
    chain = ws.jobs.claim_next()
    assert chain is not None and chain.status is JobStatus.RUNNING and chain.seconds is not None
    step = ws.jobs.submit("ingest", "p", chain_id=chain.id, status="running")
    ws.jobs.update(step.id, started_at=time.time() - 3)
    assert ws.jobs.finish(step.id, Outcome.QUARANTINED, "bad data", {"version": 2})
    ws.jobs.finish(chain.id, Outcome.QUARANTINED, "stopped")
    done = ws.jobs.get(step.id)
    assert done.status is JobStatus.FAILED and done.outcome is Outcome.QUARANTINED
    assert done.status.final and not done.outcome.retryable
    assert done.result == {"version": 2} and done.seconds == done.ended_at - done.started_at
    d = done.to_dict()
    assert list(d) == [*JOB_KEYS, "seconds"]
    assert (d["status"], d["outcome"], d["chain_id"]) == ("failed", "quarantined", chain.id)
    assert json.dumps(d) == json.dumps(
        {
            "id": step.id,
            "kind": "ingest",
            "pipeline": "p",
            "chain_id": chain.id,
            "status": "failed",
            "trigger": "manual",
            "attempt": 1,
            "max_attempts": 1,
            "cancel_requested": False,
            "detail": "bad data",
            "result": {"version": 2},
            "log_path": step.log_path,
            "pid": None,
            "created_at": step.created_at,
            "started_at": done.started_at,
            "ended_at": done.ended_at,
            "outcome": "quarantined",
            "pid_start": None,
            "lease_until": None,
            "seconds": done.seconds,
        }
    )
    assert [j.id for j in ws.jobs.list(chain_id=chain.id)] == [step.id]
    assert [j.id for j in ws.jobs.list(status="failed")] == [step.id, chain.id]
    with pytest.raises(Conflict, match="already ended \\(failed\\)"):
        ws.jobs.cancel(chain.id)


def test_cancel_and_recover_return_records(ws):
    queued = ws.jobs.submit("chain", "q")
    cancelled = ws.jobs.cancel(queued.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.outcome is Outcome.CANCELLED
    ws.jobs.submit("chain", "p", max_attempts=2)
    running = ws.jobs.claim_next()
    assert running is not None and [j.id for j in ws.jobs.running()] == [running.id]
    recovered = ws.jobs.recover()
    assert [j.id for j in recovered] == [running.id]
    assert ws.jobs.get(running.id).outcome is Outcome.INTERRUPTED
    retry = ws.jobs.list(status="queued")[0]
    assert (retry.trigger, retry.attempt) == ("recovery", 2)
    with pytest.raises(NotFound, match="No job 999"):
        ws.jobs.get(999)


def _alert(ws, state, value=0.5, acknowledged_by=""):
    with ws.db.write() as conn:
        alert_id = conn.exec_driver_sql(
            "INSERT INTO alert (rule, deployment, measure, severity, state, value, threshold, "
            "window, detail, action, action_result, opened_at, updated_at, acknowledged_by) "
            "VALUES ('drift', 'web', 'drift_share', 'warning', ?, ?, 0.2, '5m', 'too much', "
            "'none', '', 10.0, 20.0, ?)",
            (state, value, acknowledged_by),
        ).lastrowid
        for at, kind in ((10.0, "opened"), (10.0, "notified")):  # same time: insertion order
            conn.exec_driver_sql(
                "INSERT INTO alert_event (alert_id, at, kind, detail) VALUES (?, ?, ?, 'x')",
                (alert_id, at, kind),
            )
    return alert_id


def test_an_alert_reads_as_a_record_with_todays_dict(ws):
    first = _alert(ws, "open")
    _alert(ws, "resolved", value=None)
    alert = ws.alerts.get(first)
    assert isinstance(alert, Alert) and alert.state is AlertState.OPEN and alert.state.active
    d = alert.to_dict()
    assert list(d) == ALERT_KEYS and type(d["state"]) is str
    assert json.dumps(d) == json.dumps(
        {
            "id": first,
            "rule": "drift",
            "deployment": "web",
            "measure": "drift_share",
            "severity": "warning",
            "state": "open",
            "value": 0.5,
            "threshold": 0.2,
            "window": "5m",
            "detail": "too much",
            "action": "none",
            "action_result": "",
            "opened_at": 10.0,
            "updated_at": 20.0,
            "acknowledged_at": None,
            "acknowledged_by": "",
            "resolved_at": None,
        }
    )
    assert [a.id for a in ws.alerts.list("active")] == [first]
    assert [a.state for a in ws.alerts.list()] == ["resolved", "open"]
    events = ws.alerts.events(first)
    assert events == [AlertEvent(10.0, "opened", "x"), AlertEvent(10.0, "notified", "x")]
    assert events[0].to_dict() == {"at": 10.0, "kind": "opened", "detail": "x"}


def test_acknowledge_returns_the_alert_and_emits_its_dict(ws):
    from mlops_console.monitoring.alerts import Alerts

    seen: list[dict] = []
    alerts = Alerts(ws, on_event=seen.append)
    alert_id = _alert(ws, "open")
    acked = alerts.acknowledge(alert_id, "me")
    assert acked.state is AlertState.ACKNOWLEDGED and acked.acknowledged_by == "me"
    assert seen == [{"event": "alert", "kind": "acknowledged", "alert": acked.to_dict()}]
    assert [e.kind for e in alerts.events(alert_id)][-1] == "acknowledged"
    with pytest.raises(Conflict, match="is acknowledged; only an open alert"):
        alerts.acknowledge(alert_id)
