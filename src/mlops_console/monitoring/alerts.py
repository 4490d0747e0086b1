"""Alert rules (`[[alerts]]` in mlops.toml): evaluate, open, acknowledge, resolve, notify, act.

A rule breaches when its measure is over (`above`) or under (`below`) its threshold in
each of the last `windows` rolling windows. Breaching opens an alert (one per rule and
deployment at a time), which notifies and runs the rule's action once: `retrain` queues
the model's pipeline as an automation chain (gates, canary and all), `rollback` rolls the
deployment back. An alert resolves itself when the latest measured window no longer
breaches; a window without enough rows changes nothing. The history is kept in
`alert_event`.

A deployment served by many devices (a fleet) is evaluated as a whole and per device and
per group (`ws.monitor.measure_scopes`): one device whose inputs drift opens an alert that
names it ("churn device gw-01"), however little it moves the fleet's figure. The key is
(rule, deployment, scope): one open alert per device and rule, resolved when that
device's window no longer breaches.

Notifications run on a small thread pool with three tries and backoff, so a slow or
failing webhook never holds up the daemon's loop; every try's outcome is an event.
"""

from __future__ import annotations

import builtins
import fnmatch
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.events import Event
from mlops_console.monitoring.alert_records import COLS, Alert, AlertEvent, AlertState

if TYPE_CHECKING:
    from mlops_console.monitoring.window import WindowReport
    from mlops_console.workspace import Workspace

log = logging.getLogger(__name__)

TRIES = 3


def unknown_column(ws: Workspace, rule, model: str | None, version: int | None) -> str | None:
    """Why a `psi:COLUMN` rule cannot be measured on this model version (None: it can).

    mlops.toml is read before any model is known, so the column is checked here, against
    the inputs of the version a deployment serves."""
    if not rule.measure.startswith("psi:") or model is None or version is None:
        return None
    try:
        inputs = [c["name"] for c in ws.models.get_version(model, int(version)).signature["inputs"]]
    except (MlopsError, KeyError, TypeError):
        return None
    column = rule.measure.removeprefix("psi:")
    if column in inputs:
        return None
    return (
        f"alert {rule.name!r}: measure {rule.measure!r} names no input of {model} v{version} "
        f"(its inputs: {', '.join(inputs)}); fix the rule's measure in mlops.toml"
    )


def _scoped(alert: Alert) -> dict[str, str]:
    """The scope of an alert in a change record (absent for a whole deployment)."""
    return {"scope": alert.scope} if alert.scope else {}


class Alerts:
    def __init__(self, ws: Workspace, on_event=None, backoff: float = 1.0):
        self.ws = ws
        self.on_event = on_event  # the daemon's event stream (the console's live feed)
        self.backoff = backoff
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list = []
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()  # (rule, deployment) with a bad measure

    # --- the store --------------------------------------------------------------------

    def list(
        self,
        state: str | None = None,
        deployment: str | None = None,
        limit: int = 200,
        scope: str | None = None,
    ) -> builtins.list[Alert]:
        """The newest alerts first; `state` is one of AlertState, or "active" (not resolved);
        `scope` ("" the whole deployment, "device D", "group G") keeps only that scope's."""
        where: builtins.list[str] = ["1=1"]
        args: builtins.list[Any] = []
        if state == "active":
            where.append("state IN ('open', 'acknowledged')")
        elif state:
            where.append("state = ?")
            args.append(state)
        if deployment:  # the deployment's own alerts and those of its devices and groups
            where.append("deployment = ?")
            args.append(deployment)
        if scope is not None:
            where.append("scope = ?")
            args.append(scope)
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {COLS} FROM alert WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).mappings()
            return [Alert.from_row(r) for r in rows]

    def get(self, alert_id: int) -> Alert:
        with self.ws.db.read() as conn:
            row = (
                conn.exec_driver_sql(f"SELECT {COLS} FROM alert WHERE id = ?", (int(alert_id),))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"No alert {alert_id}. `mlops alerts list` shows them.")
        return Alert.from_row(row)

    def events(self, alert_id: int) -> builtins.list[AlertEvent]:
        """The alert's history, oldest first."""
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT at, kind, detail FROM alert_event WHERE alert_id = ? ORDER BY id",
                (int(alert_id),),
            ).mappings()
            return [AlertEvent(at=r["at"], kind=r["kind"], detail=r["detail"]) for r in rows]

    def _event(self, alert_id: int, kind: str, detail: str = "") -> None:
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO alert_event (alert_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                (alert_id, time.time(), kind, detail),
            )

    def acknowledge(self, alert_id: int, by: str = "") -> Alert:
        alert = self.get(alert_id)
        if alert.state is not AlertState.OPEN:
            raise Conflict(
                f"Alert {alert_id} is {alert.state}; only an open alert is acknowledged."
            )
        now = time.time()
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE alert SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?, "
                "updated_at = ? WHERE id = ?",
                (now, by, now, alert_id),
            )
        self._event(alert_id, "acknowledged", by)
        alert = self.get(alert_id)
        self._emit(alert, "acknowledged")
        return alert

    # --- evaluation -------------------------------------------------------------------

    def evaluate(
        self, deployments: builtins.list[str] | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Evaluate every rule on every deployment once; returns what changed."""
        from mlops_console.durations import parse_duration

        rules = self.ws.config.alerts
        if not rules:
            return []
        mon = self.ws.monitor
        names = deployments if deployments is not None else mon.deployments()
        changes = []
        now = time.time()
        for name in names:
            # per window: the report of each scope ("" the whole deployment); None: the
            # window could not be measured (its measures count as not taken)
            results: dict[tuple[str, int], dict[str, WindowReport] | None] = {}
            try:
                mon.collect(name)
            except OSError as exc:
                changes.append({"deployment": name, "error": f"collect failed: {exc}"})
                continue
            rec = self.ws.deployments.find(name)
            if rec is not None and not rec.running:
                # a stopped deployment's last windows still hold its traffic: no new alert,
                # and what was open is settled (nothing measures it any more)
                changes += self._settle_stopped(name, rec.status)
                continue
            for rule in rules:
                if not any(fnmatch.fnmatch(name, g) for g in rule.deployments):
                    continue
                w = parse_duration(rule.window, "window")
                for k in range(rule.windows):
                    key = (rule.window, k)
                    if key not in results:
                        try:
                            results[key] = mon.measure_scopes(
                                name, rule.window, end=now - k * w, collect_first=False
                            )
                        except (MlopsError, OSError):
                            results[key] = None
                newest = results.get((rule.window, 0)) or {}
                latest = newest.get("")
                problem = unknown_column(
                    self.ws,
                    rule,
                    latest.model if latest is not None else None,
                    latest.version if latest is not None else None,
                )
                if problem:
                    if (rule.name, name) not in self._reported:  # once a process, not a minute
                        self._reported.add((rule.name, name))
                        log.warning("%s", problem)
                    changes.append({"deployment": name, "rule": rule.name, "error": problem})
                    continue
                for scope in list(newest) or [""]:
                    values = []
                    for k in range(rule.windows):
                        report = (results.get((rule.window, k)) or {}).get(scope)
                        values.append(report.value(rule.measure) if report is not None else None)
                    change = self._apply(rule, name, values, newest.get(scope), scope)
                    if change:
                        changes.append(change)
        return changes

    def _settle_stopped(self, deployment: str, status: str) -> builtins.list[dict[str, Any]]:
        changes = []
        rules = {r.name: r for r in self.ws.config.alerts}
        for alert in self.list("active", deployment):
            now = time.time()
            with self.ws.db.write() as conn:
                conn.exec_driver_sql(
                    "UPDATE alert SET state = 'resolved', resolved_at = ?, updated_at = ? "
                    "WHERE id = ?",
                    (now, now, alert.id),
                )
            self._event(alert.id, "resolved", f"the deployment is {status}")
            alert = self.get(alert.id)
            rule = rules.get(alert.rule)
            if rule is not None:
                self._notify(rule, alert, "resolved")
            else:
                self._emit(alert, "resolved")
            changes.append(
                {"alert": alert.id, "state": "resolved", "deployment": deployment, **_scoped(alert)}
            )
        return changes

    def _breach(self, rule, value: float) -> bool:
        return value > rule.above if rule.above is not None else value < rule.below

    def _apply(
        self,
        rule,
        deployment: str,
        values: builtins.list,
        latest: WindowReport | None,
        scope: str = "",
    ) -> dict[str, Any] | None:
        active = [a for a in self.list("active", deployment, scope=scope) if a.rule == rule.name]
        threshold = rule.above if rule.above is not None else rule.below
        current = values[0]
        if current is None:
            return None  # not measured in this window (too few rows, no labels): no change
        breach = all(v is not None and self._breach(rule, v) for v in values)
        now = time.time()
        if active:
            alert = active[0]
            if breach:
                with self.ws.db.write() as conn:
                    conn.exec_driver_sql(
                        "UPDATE alert SET value = ?, updated_at = ? WHERE id = ?",
                        (current, now, alert.id),
                    )
                return None
            if not self._breach(rule, current):
                with self.ws.db.write() as conn:
                    conn.exec_driver_sql(
                        "UPDATE alert SET state = 'resolved', value = ?, resolved_at = ?, "
                        "updated_at = ? WHERE id = ?",
                        (current, now, now, alert.id),
                    )
                self._event(alert.id, "resolved", f"{rule.measure} = {current:.4g}")
                alert = self.get(alert.id)
                self._notify(rule, alert, "resolved")
                return {
                    "alert": alert.id,
                    "state": "resolved",
                    "deployment": deployment,
                    **_scoped(alert),
                }
            return None
        if not breach:
            return None
        op = ">" if rule.above is not None else "<"
        detail = (
            f"{rule.measure} = {current:.4g} {op} {threshold:g} over the last "
            f"{rule.windows} x {rule.window}"
        )
        if scope:  # the message names the device (or group) on its own
            members = (latest.devices if latest is not None else None) or []
            shown = f" ({', '.join(members)})" if scope.startswith("group ") and members else ""
            detail = f"{scope}{shown}: {detail}"
        drift = (latest.drift if latest is not None else None) or {}
        if drift.get("drifted_columns"):
            detail += f"; drifted: {', '.join(drift['drifted_columns'])}"
        with self.ws.db.write() as conn:
            alert_id = conn.exec_driver_sql(
                "INSERT INTO alert (rule, deployment, scope, measure, severity, state, value, "
                "threshold, window, detail, action, action_result, opened_at, updated_at, "
                "acknowledged_by) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, '', ?, ?, '')",
                (
                    rule.name,
                    deployment,
                    scope,
                    rule.measure,
                    rule.severity,
                    current,
                    threshold,
                    rule.window,
                    detail,
                    rule.action,
                    now,
                    now,
                ),
            ).lastrowid
        assert alert_id is not None  # an INSERT always sets it
        self._event(alert_id, "opened", detail)
        alert = self.get(alert_id)
        self._notify(rule, alert, "opened")
        if rule.action != "none":
            result = self._act(rule, alert)
            with self.ws.db.write() as conn:
                conn.exec_driver_sql(
                    "UPDATE alert SET action_result = ? WHERE id = ?", (result, alert_id)
                )
            self._event(alert_id, "action", result)
            alert = self.get(alert_id)
            self._emit(alert, "action")
        return {
            "alert": alert_id,
            "state": "open",
            "deployment": deployment,
            **_scoped(alert),
            "detail": detail,
        }

    # --- actions ----------------------------------------------------------------------

    def _act(self, rule, alert: Alert) -> str:
        name = alert.deployment
        try:
            if rule.action == "rollback" and alert.scope:
                # a rollback acts on every device: one device's breach does not decide it
                return (
                    f"not rolled back: the rollback would move all of {name}, and only "
                    f"{alert.scope} breached; roll that device back on its own if it must"
                )
            if rule.action == "rollback":
                self.ws.deployments.rollback(name, reason=f"alert {alert.id}: {rule.name}")
                return f"rolled {name} back"
            rec = self.ws.deployments.get(name)
            found = self.ws.pipelines.for_model(rec.model)
            if found is None:
                return f"no pipeline registers model {rec.model!r}: nothing to retrain"
            pipeline = found.name
            busy = [
                j
                for j in self.ws.jobs.list(pipeline=pipeline, limit=20)
                if j.kind == "chain" and not j.status.final
            ]
            if busy:
                return f"chain {busy[0].id} of {pipeline} is already {busy[0].status}"
            job = self.ws.jobs.submit(
                "chain", pipeline, trigger=f"alert {alert.id}", max_attempts=2
            )
            return f"queued retrain chain {job.id} of pipeline {pipeline}"
        except (MlopsError, OSError) as exc:
            return f"{rule.action} failed: {exc}"

    # --- notifications ----------------------------------------------------------------

    def _emit(self, alert: Alert, kind: str) -> None:
        if self.on_event is not None:
            self.on_event({"event": "alert", "kind": kind, "alert": alert.to_dict()})

    def _notify(self, rule, alert: Alert, kind: str) -> None:
        self._emit(alert, kind)
        from mlops_console.plugins import load_plugins

        available = load_plugins().notifiers()
        text = (
            f"[{alert.severity}] alert {alert.id} {kind}: {rule.name} on "
            f"{alert.subject}: {alert.detail}"
        )
        shaped = Event(
            kind,
            text,
            severity=alert.severity,
            deployment=alert.deployment,
            detail=alert.detail,
            alert=alert.to_dict(),
        )
        for name in rule.notify:
            if name == "console":
                continue  # the event stream above
            fn = available.get(name)
            if fn is None:
                self._event(
                    alert.id, "notify_failed", f"{name}: no such notifier (`mlops plugins list`)"
                )
                continue
            settings = self.ws.config.notifiers.get(name)
            event = shaped.notice(settings.model_dump() if settings else {}, str(self.ws.state))
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")
                self._pending.append(self._pool.submit(self._deliver, name, fn, event))

    def _deliver(self, name: str, fn, event: dict[str, Any]) -> None:
        alert_id = event["alert"]["id"]
        for attempt in range(1, TRIES + 1):
            try:
                fn(event)
                self._event(alert_id, "notified", f"{name} ({event['kind']})")
                return
            except Exception as exc:  # a notifier's failure is reported, never raised
                log.info("notifier %s, try %d: %s", name, attempt, exc)
                if attempt == TRIES:
                    self._event(
                        alert_id,
                        "notify_failed",
                        f"{name}: {str(exc)[:200]} (after {TRIES} tries)",
                    )
                    if self.on_event is not None:
                        self.on_event(
                            {"event": "notify_failed", "notifier": name, "alert": alert_id}
                        )
                    return
                time.sleep(self.backoff * 2 ** (attempt - 1))

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the notifications in flight (the CLI, before it exits)."""
        from concurrent.futures import wait

        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            wait(pending, timeout=timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
