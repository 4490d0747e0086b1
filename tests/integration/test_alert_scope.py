"""The scope of a fleet's alert (one device or group) in a column of its own (0010_alert_scope).

A workspace from before kept the scope after the name in the `deployment` column
("m device gw-01"); opening it moves the scope into `scope`. Alerts are then keyed,
deduplicated and resolved by (rule, deployment, scope), and every lookup by an alert's
deployment gets the plain name.
"""

import json

from tests.store_revision import database_at

from mlops_console.config import AlertRule
from mlops_console.monitoring.alert_records import Alert
from mlops_console.store.db import HEAD, alembic_config
from mlops_console.workspace import Workspace

RULE = AlertRule(name="drift", measure="psi:x1", above=0.2, window="5m", notify=["console"])


# deployment column as the stopgap wrote it -> (deployment, scope) after the migration
STOPGAP = {
    "m": ("m", ""),
    "m device gw-01": ("m", "device gw-01"),
    "m group plant-a": ("m", "group plant-a"),
    "m--gw-02": ("m--gw-02", ""),  # a deployment of its own: no space, nothing moved
    "odd devices": ("odd devices", ""),  # neither "device " nor "group " after the space
}


def _insert(db, deployment, state="open", rule="drift"):
    with db.write() as conn:
        alert_id = conn.exec_driver_sql(
            "INSERT INTO alert (rule, deployment, measure, severity, state, value, threshold, "
            "window, detail, action, action_result, opened_at, updated_at, acknowledged_by) "
            "VALUES (?, ?, 'psi:x1', 'warning', ?, 0.5, 0.2, '5m', 'd', 'none', '', 10.0, "
            "20.0, '')",
            (rule, deployment, state),
        ).lastrowid
        conn.exec_driver_sql(
            "INSERT INTO alert_event (alert_id, at, kind, detail) VALUES (?, 10.0, 'opened', 'd')",
            (alert_id,),
        )
    return alert_id


def test_a_workspace_from_before_moves_the_scope_out_of_the_deployment_column(tmp_path):
    root = tmp_path / "w"
    db = database_at(root, "0009_integrity")
    ids = {stored: _insert(db, stored) for stored in STOPGAP}
    db.close()

    with Workspace.open(root) as ws:
        assert ws.db.schema_revision() == HEAD
        with ws.db.read() as conn:
            rows = {
                r["id"]: (r["deployment"], r["scope"])
                for r in conn.exec_driver_sql("SELECT id, deployment, scope FROM alert").mappings()
            }
            index = [
                r[2] for r in conn.exec_driver_sql("PRAGMA index_info('ix_alert_state')").all()
            ]
            # the alerts' history still points at them (the table was not copied away)
            events = conn.exec_driver_sql("SELECT count(*) FROM alert_event").scalar()
        assert rows == {ids[stored]: moved for stored, moved in STOPGAP.items()}
        assert index == ["state", "deployment", "scope"]
        assert events == len(STOPGAP)

        device = ws.alerts.get(ids["m device gw-01"])
        assert (device.deployment, device.scope, device.subject) == (
            "m",
            "device gw-01",
            "m device gw-01",
        )
        d = device.to_dict()
        assert list(d)[:5] == ["id", "rule", "deployment", "scope", "subject"]
        assert [d["deployment"], d["scope"], d["subject"]] == ["m", "device gw-01", device.subject]
        whole = ws.alerts.get(ids["m"]).to_dict()
        assert "scope" not in whole and "subject" not in whole and whole["deployment"] == "m"

        # `--deployment m`: the deployment's own alerts and its devices' and groups', and
        # not those of m--gw-02, a deployment of its own
        listed = ws.alerts.list(deployment="m")
        assert sorted(a.id for a in listed) == sorted(
            ids[s] for s in ("m", "m device gw-01", "m group plant-a")
        )
        assert [a.id for a in ws.alerts.list(deployment="m", scope="")] == [ids["m"]]
        assert [a.id for a in ws.alerts.list(deployment="m", scope="group plant-a")] == [
            ids["m group plant-a"]
        ]


def test_downgrade_puts_the_scope_back_after_the_name(tmp_path):
    from alembic import command

    root = tmp_path / "w"
    with Workspace.init(root) as ws:
        ws.alerts._apply(RULE, "m", [0.5], None, "device gw-01")
        ws.alerts._apply(RULE, "m", [0.5], None, "")
        db = ws.db
        cfg = alembic_config()
        with db.sqlalchemy_engine().connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0009_integrity")
        with db.read() as conn:
            stored = sorted(
                r[0] for r in conn.exec_driver_sql("SELECT deployment FROM alert").all()
            )
            columns = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info('alert')").all()]
        assert stored == ["m", "m device gw-01"]
        assert "scope" not in columns


def test_alerts_are_keyed_by_rule_deployment_and_scope(ws):
    alerts = ws.alerts
    changes = [
        alerts._apply(RULE, "m", [0.5], None, "device gw-01"),
        alerts._apply(RULE, "m", [0.5], None, "device gw-01"),  # still open: no second one
        alerts._apply(RULE, "m", [0.5], None, ""),
        alerts._apply(RULE, "m", [0.5], None, "group plant-a"),
    ]
    assert [c and c["state"] for c in changes] == ["open", None, "open", "open"]
    assert changes[0] is not None and changes[0]["scope"] == "device gw-01"
    assert changes[2] is not None and "scope" not in changes[2]
    with ws.db.read() as conn:
        stored = conn.exec_driver_sql(
            "SELECT deployment, scope FROM alert ORDER BY id"
        ).all()  # the name, always: nothing to split
    assert [tuple(r) for r in stored] == [("m", "device gw-01"), ("m", ""), ("m", "group plant-a")]

    # gw-01 recovers: its alert resolves, the fleet's and the group's stay open
    resolved = alerts._apply(RULE, "m", [0.1], None, "device gw-01")
    assert resolved is not None and resolved["state"] == "resolved"
    assert resolved["scope"] == "device gw-01" and resolved["deployment"] == "m"
    active = {a.scope: a for a in alerts.list("active", "m")}
    assert set(active) == {"", "group plant-a"}
    assert isinstance(active[""], Alert) and active[""].subject == "m"
    json.dumps([a.to_dict() for a in active.values()])  # plain JSON values

    # the device breaches again: a new alert of its own, not the resolved one reopened
    again = alerts._apply(RULE, "m", [0.6], None, "device gw-01")
    assert again is not None and again["state"] == "open" and again["alert"] != changes[0]["alert"]


def test_an_action_on_a_device_alert_gets_the_plain_deployment_name(ws):
    rollback = RULE.model_copy(update={"action": "rollback"})
    retrain = RULE.model_copy(update={"name": "retrain", "action": "retrain"})
    device = ws.alerts._apply(rollback, "m", [0.5], None, "device gw-01")
    assert device is not None
    result = ws.alerts.get(device["alert"]).action_result
    assert result.startswith("not rolled back: the rollback would move all of m,")
    whole = ws.alerts._apply(retrain, "m", [0.5], None, "group plant-a")
    assert whole is not None
    # the deployment is looked up as "m" (no record of it here), not "m group plant-a"
    result = ws.alerts.get(whole["alert"]).action_result
    assert result.startswith("retrain failed:") and "'m'" in result and "plant-a" not in result
