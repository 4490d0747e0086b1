"""ws.deployments reads rows into records whose to_dict() is the JSON the CLI and the
daemon's API have always given: the same keys, in the same order, with the same values."""

from __future__ import annotations

import json

import pytest

from mlops_console.deploy.records import Deployment, DeploymentEvent, DeploymentStatus
from mlops_console.errors import NotFound

DEPLOYMENT_KEYS = [
    "name",
    "target",
    "model",
    "version",
    "canary_version",
    "canary_percent",
    "status",
    "endpoint",
    "config",
    "created_at",
    "updated_at",
]


def _insert(ws, name, version, canary_version=None, canary_percent=0.0, status="running"):
    config = {"host": "127.0.0.1", "port": 8123, "runtime": None}
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO deployment (name, target, model_name, version, canary_version, "
            "canary_percent, status, endpoint, config, created_at, updated_at) "
            "VALUES (?, 'local', 'churn', ?, ?, ?, ?, 'http://127.0.0.1:8123', ?, 10.0, 20.5)",
            (name, version, canary_version, canary_percent, status, json.dumps(config)),
        )
        for at, action, f, t, detail in (
            (1.0, "create", None, 1, ""),
            (2.0, "canary", 1, 2, "30.0% of traffic"),
            (2.0, "promote", 1, 2, "looks fine"),  # same time: kept in insertion order
        ):
            conn.exec_driver_sql(
                "INSERT INTO deployment_event (name, at, action, from_version, to_version, "
                "detail) VALUES (?, ?, ?, ?, ?, ?)",
                (name, at, action, f, t, detail),
            )


def test_a_deployment_reads_as_a_record_with_todays_dict(ws):
    _insert(ws, "web", 2, canary_version=3, canary_percent=30.0)
    _insert(ws, "api", 1, status="stopped")
    rec = ws.deployments.get("web")
    assert isinstance(rec, Deployment) and ws.deployments.find("web") == rec
    assert (rec.model, rec.version, rec.canary_version, rec.canary_percent) == ("churn", 2, 3, 30.0)
    assert rec.ref == "churn/2" and rec.canary_ref == "churn/3" and rec.running
    assert rec.config == {"host": "127.0.0.1", "port": 8123, "runtime": None}
    assert list(rec.to_dict()) == DEPLOYMENT_KEYS
    assert json.dumps(rec.to_dict()) == json.dumps(
        {
            "name": "web",
            "target": "local",
            "model": "churn",
            "version": 2,
            "canary_version": 3,
            "canary_percent": 30.0,
            "status": "running",
            "endpoint": "http://127.0.0.1:8123",
            "config": {"host": "127.0.0.1", "port": 8123, "runtime": None},
            "created_at": 10.0,
            "updated_at": 20.5,
        }
    )
    api = ws.deployments.get("api")
    assert not api.running and api.canary_ref is None
    assert [d.name for d in ws.deployments.list()] == ["api", "web"]  # by name
    assert ws.deployments.list() == [api, rec]


def test_a_missing_deployment_is_none_or_not_found(ws):
    assert ws.deployments.find("nope") is None
    assert ws.deployments.list() == []
    with pytest.raises(NotFound, match="mlops deployments list"):
        ws.deployments.get("nope")


def test_history_is_events_oldest_first(ws):
    _insert(ws, "web", 2)
    events = ws.deployments.history("web")
    assert all(isinstance(e, DeploymentEvent) for e in events)
    assert [e.action for e in events] == ["create", "canary", "promote"]
    assert events[0].to_dict() == {
        "at": 1.0,
        "action": "create",
        "from_version": None,
        "to_version": 1,
        "detail": "",
    }
    assert list(events[0].to_dict()) == ["at", "action", "from_version", "to_version", "detail"]
    assert ws.deployments.history("nope") == []


def test_a_status_is_the_deployment_with_live_and_stats_last(ws):
    _insert(ws, "web", 2)  # recorded as running, but no server was ever started
    rec = ws.deployments.get("web")
    st = ws.deployments.status("web")
    assert isinstance(st, DeploymentStatus) and st.ref == rec.ref and st.running
    assert st.live_status == "stopped" and st.stats == {}  # stats only while it runs
    assert st.to_dict() == {**rec.to_dict(), "live": st.live, "stats": {}}
    assert list(st.to_dict()) == [*DEPLOYMENT_KEYS, "live", "stats"]
    assert st.live == {
        "name": "web",
        "target": "local",
        "pid": None,
        "endpoint": "http://127.0.0.1:8123",
        "status": "stopped",
    }
