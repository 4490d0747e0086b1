"""Objectives' checkers: each probes the workspace's real state through the Workspace API
(registry aliases and their history, what a deployment's server says it serves, dataset
versions and quarantine, prediction logs, alerts) and says why it passes or not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError
from mlops_console.labs import spec
from mlops_console.labs.actions import resolve_version

if TYPE_CHECKING:
    from mlops_console.labs.state import LabState
    from mlops_console.workspace import Workspace


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def _reads(version, file: str | None) -> bool:
    """Whether a dataset version was read from a file named `file`."""
    if file is None:
        return True
    return any(PurePath(str(s.get("path", ""))).name == file for s in version.sources)


def _alias(ws: Workspace, model: str, alias: str) -> int | None:
    """The version `alias` names (`latest`: the newest version), None if none."""
    if alias == "latest":
        found = ws.models.versions(model) if model in {m.name for m in ws.models.list()} else []
        return max((v.version for v in found), default=None)
    try:
        return ws.models.resolve(f"{model}@{alias}").version
    except MlopsError:
        return None


def _trained_on(ws: Workspace, model: str, version: int, dataset: str, file: str) -> str | None:
    """The dataset version `model/version` was trained on that was read from `file`."""
    mv = ws.models.get_version(model, version)
    for d in mv.lineage.get("datasets", []):
        if d.get("name") != dataset:
            continue
        dv = ws.data.version(dataset, int(str(d["version"]).lstrip("v")))
        if _reads(dv, file):
            return f"{dataset} v{dv.version}" + (" (forced)" if d.get("forced") else "")
    return None


def _live(ws: Workspace, name: str) -> tuple[Any, dict[str, Any]] | None:
    """The deployment record and what its server reports (None: no such deployment)."""
    rec = ws.deployments.find(name)
    if rec is None:
        return None
    return rec, ws.deployments.status(name).stats or {}


def check(ws: Workspace, state: LabState, c: Any) -> Verdict:
    """The verdict of one checker on the workspace as it is now."""
    try:
        return _check(ws, state, c)
    except MlopsError as exc:  # what the probe needs is not there yet
        return Verdict(False, str(exc))


def _check(ws: Workspace, state: LabState, c: Any) -> Verdict:
    match c:
        case spec.DatasetAcceptedCheck():
            if c.dataset not in {d.name for d in ws.data.list()}:
                return Verdict(False, f"no dataset {c.dataset!r} is registered")
            current = ws.data.get(c.dataset).current_version
            versions = {v.version: v for v in ws.data.versions(c.dataset)}
            cur = versions.get(current) if current is not None else None
            if cur is None:
                return Verdict(False, f"{c.dataset} has no accepted version")
            if not _reads(cur, c.file):
                return Verdict(False, f"{c.dataset} v{cur.version} was not read from {c.file}")
            if cur.status == "forced" and not c.allow_forced:
                return Verdict(
                    False, f"{c.dataset} v{cur.version} was forced past its contract (--force)"
                )
            return Verdict(True, f"{c.dataset} v{cur.version} accepted ({cur.rows} rows)")
        case spec.QuarantineSeenCheck():
            for dv in ws.data.versions(c.dataset):
                if dv.status == "quarantined" and _reads(dv, c.file):
                    rules = ", ".join(r["rule"] for r in dv.failed_rules[:3] if "rule" in r)
                    return Verdict(True, f"v{dv.version} quarantined ({rules or 'contract'})")
            return Verdict(False, f"no version of {c.dataset} read from {c.file} was quarantined")
        case spec.ModelRegisteredCheck():
            v = _alias(ws, c.model, c.alias)
            if v is None:
                return Verdict(False, f"{c.model} has no @{c.alias}")
            return Verdict(True, f"{c.model}/{v} is @{c.alias}")
        case spec.ChampionTrainedOnCheck():
            v = _alias(ws, c.model, c.alias)
            if v is None:
                return Verdict(False, f"{c.model} has no @{c.alias}")
            used = _trained_on(ws, c.model, v, c.dataset, c.file)
            if used is None:
                return Verdict(False, f"{c.model}@{c.alias} (v{v}) was not trained on {c.file}")
            return Verdict(True, f"{c.model}/{v} was trained on {used}")
        case spec.ServingChampionCheck():
            live = _live(ws, c.deployment)
            if live is None:
                return Verdict(False, f"no deployment {c.deployment!r}")
            rec, stats = live
            v = _alias(ws, rec.model, c.alias)
            serving = (stats.get("primary") or {}).get("version")
            if not stats:
                return Verdict(False, f"{c.deployment}'s server does not answer")
            if rec.canary_version is not None:
                return Verdict(False, f"{c.deployment} still has a canary (v{rec.canary_version})")
            if v is None or serving != v:
                return Verdict(False, f"{c.deployment} serves v{serving}, @{c.alias} is v{v}")
            if c.file and c.dataset and not _trained_on(ws, rec.model, v, c.dataset, c.file):
                return Verdict(False, f"{c.deployment} serves v{v}, not trained on {c.file}")
            return Verdict(True, f"{c.deployment} serves {rec.model}/{v} (@{c.alias})")
        case spec.ServedRequestsCheck():
            live = _live(ws, c.deployment)
            if live is None or not live[1]:
                return Verdict(False, f"{c.deployment} is not serving")
            rec = live[0]
            if (
                c.file
                and c.dataset
                and not _trained_on(ws, rec.model, rec.version, c.dataset, c.file)
            ):
                return Verdict(
                    False, f"{c.deployment} serves v{rec.version}, not trained on {c.file}"
                )
            p = live[1].get("primary_stats") or {}
            n, failed = p.get("requests", 0), p.get("errors", 0) + p.get("client_errors", 0)
            if failed:
                return Verdict(False, f"{failed} of {n} requests failed since v{live[0].version}")
            if n < c.min_requests:
                return Verdict(False, f"{n} requests answered (needs {c.min_requests})")
            return Verdict(True, f"{n} requests answered, none failed")
        case spec.ThroughCanaryCheck():
            rec = ws.deployments.get(c.deployment)
            history = ws.deployments.history(c.deployment)
            canaried = any(e.action == "canary" and e.to_version == rec.version for e in history)
            promoted = any(e.action == "promote" and e.to_version == rec.version for e in history)
            if canaried and promoted:
                return Verdict(True, f"v{rec.version} came in as a canary and was promoted")
            return Verdict(False, f"v{rec.version} did not come through a promoted canary")
        case spec.CanaryRolledBackCheck():
            rec = ws.deployments.get(c.deployment)
            bad = resolve_version(ws, rec.model, c.version, state)
            if rec.canary_version == bad:
                return Verdict(False, f"v{bad} is still the canary of {c.deployment}")
            if rec.version == bad:
                return Verdict(False, f"v{bad} was promoted and serves {c.deployment}")
            back = [
                e
                for e in ws.deployments.history(c.deployment)
                if e.action == "rollback" and e.from_version == bad
            ]
            if not back:
                return Verdict(False, f"the canary v{bad} was never rolled back")
            return Verdict(True, f"canary v{bad} rolled back: {back[-1].detail or 'no reason'}")
        case spec.NotServingCheck():
            bad = resolve_version(ws, c.model, c.version, state)
            live = _live(ws, c.deployment)
            if live is None or not live[1]:
                return Verdict(False, f"{c.deployment} is not serving")
            rec, stats = live
            serving = (stats.get("primary") or {}).get("version")
            if bad in (serving, rec.canary_version):
                return Verdict(False, f"{c.deployment} still serves v{bad}")
            if _alias(ws, c.model, c.alias) == bad:
                return Verdict(False, f"v{bad} is still @{c.alias}")
            moves = [
                m
                for m in ws.models.history(c.model, c.alias)
                if m.from_version == bad and m.reason.strip() not in ("", "rollback")
            ]
            if not moves:
                return Verdict(False, f"the alias history does not say why @{c.alias} left v{bad}")
            return Verdict(True, f"v{bad} no longer serves; @{c.alias} left it: {moves[-1].reason}")
        case spec.LabelsImportedCheck():
            report = ws.monitor.measure(c.deployment, window=c.window)
            if not report.decay:
                return Verdict(False, f"no labels for {c.deployment}'s predictions yet")
            return Verdict(True, f"labels joined: decay measured for {c.deployment}")
        case spec.LatencyBelowCheck():
            live = _live(ws, c.deployment)
            if live is None or not live[1]:
                return Verdict(False, f"{c.deployment} is not serving")
            rec, stats = live
            p = stats.get("primary_stats") or {}
            n, p99 = p.get("requests", 0), p.get("p99_ms")
            if n < c.min_requests or p99 is None:
                return Verdict(
                    False,
                    f"{n} requests answered since v{rec.version} started serving; "
                    f"{c.min_requests} are needed to judge its latency",
                )
            if p99 >= c.p99_ms:
                return Verdict(False, f"v{rec.version}: p99 {p99:.0f} ms over {n} requests")
            return Verdict(True, f"v{rec.version}: p99 {p99:.0f} ms over {n} requests")
        case spec.AlertRaisedCheck():
            found = [
                a
                for a in ws.alerts.list(deployment=c.deployment)
                if a.measure.startswith(c.measure)
            ]
            if not found:
                return Verdict(False, f"no alert on {c.measure} for {c.deployment}")
            a = found[0]
            return Verdict(True, f"alert {a.rule!r} ({a.measure}) is {a.state}")
        case spec.PluginCheck():  # a plugin's checker kind (`mlops_lab_checks`)
            passed, reason = c.verdict(ws, state)
            return Verdict(bool(passed), str(reason))
    raise MlopsError(f"Unknown checker {c!r}.")  # pragma: no cover (the union is closed)
