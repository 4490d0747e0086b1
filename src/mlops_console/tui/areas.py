"""What each console screen lists, shows and can do: plain functions over the Workspace,
so they are testable without a terminal (and run in worker threads)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


BARS = "▁▂▃▄▅▆▇█"


def spark(values: list[float | None]) -> str:
    """A one-line chart: ▁ to █ scaled to the series' range, · where nothing was measured."""
    known = [v for v in values if v is not None]
    if not known:
        return "·" * len(values)
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(
        "·" if v is None else BARS[min(int((v - lo) / span * (len(BARS) - 1) + 0.5), 7)]
        for v in values
    )


def severity(drifted: bool, psi: float | None, limit: float = 0.2) -> str:
    """Rich markup colour of a drift cell: red drifted, yellow close, green fine."""
    if drifted:
        return "red"
    if psi is not None and psi >= limit / 2:
        return "yellow"
    return "green"


@dataclass
class Listing:
    columns: list[str]
    rows: list[tuple[str, list[str]]]  # (key, cells)


@dataclass
class Action:
    key: str
    name: str  # "area: verb" in the command palette
    description: str
    run: Callable[[Any, str], str]  # (ws, row key) -> message
    destructive: bool = True  # asks for confirmation first
    ask: str = ""  # a question typed in the prompt; run gets (ws, key, answer)

    @property
    def id(self) -> str:
        """The binding id for `[console] keys` remapping: "model-promote", "job-run-now"."""
        return self.name.replace(": ", "-").replace(" ", "-")


@dataclass
class Area:
    name: str
    title: str
    help: str
    load: Callable[[Any], Listing]
    detail: Callable[[Any, str], str]
    actions: list[Action] = field(default_factory=list)
    # (ws, key) -> {"title", "ylabel", "series": {label: (xs, ys)}} or None: a chart under
    # the detail (plotext), computed in the same worker as the detail text
    chart: Callable[[Any, str], dict[str, Any] | None] | None = None


def _runs(ws) -> Listing:
    runs = ws.runs.search(limit=500)
    keys = sorted({k for r in runs for k in r.metrics if k.startswith("holdout_")})[:3]
    return Listing(
        ["run", "experiment", "status", "started", *keys],
        [
            (
                r.id,
                [
                    r.id[:8],
                    r.experiment,
                    r.status,
                    _when(r.start_time),
                    *(_num(r.metrics.get(k)) for k in keys),
                ],
            )
            for r in runs
        ],
    )


def _run_detail(ws, key: str) -> str:
    r = ws.runs.get(key)
    lines = [f"Run {r.id}", f"{r.experiment} / {r.name}: {r.status}", "", "Params:"]
    lines += [f"  {k} = {v}" for k, v in sorted(r.params.items())]
    lines += ["", "Metrics (a chart where a metric has several steps):"]
    for k, v in sorted(r.metrics.items()):
        line = f"  {k} = {_num(v)}"
        history = ws.runs.metric_history(r.id, k)
        if len(history) > 2:
            values = [h[1] for h in history][-40:]
            line += f"  {spark(values)}  ({len(history)} steps, min {_num(min(values))}, max {_num(max(values))})"
        lines.append(line)
    lines += ["", "Data read:"] + [
        f"  {i['name']} {i['version']} ({i['rows']} rows)" + (" FORCED" if i.get("forced") else "")
        for i in r.inputs
    ]
    git = r.lineage.get("git")
    lines += ["", f"Code: {(git or {}).get('commit', 'not under git')}"]
    return "\n".join(lines)


def _run_chart(ws, key: str) -> dict[str, Any] | None:
    r = ws.runs.get(key)
    series = {}
    for k in sorted(r.metrics):
        history = ws.runs.metric_history(r.id, k)
        if len(history) > 2:
            series[k] = ([h[0] for h in history], [h[1] for h in history])
    if not series:
        return None
    return {"title": f"run {r.id[:8]}: metrics by step", "ylabel": "value", "series": series}


def _monitoring_chart(ws, key: str) -> dict[str, Any] | None:
    kind, _, ident = key.partition(":")
    if kind != "dep":
        return None
    series = ws.monitor.performance_series(ident, "5m", 12)
    xs = list(range(-len(series) + 1, 1))
    p99 = [p["p99_ms"] if p["p99_ms"] is not None else 0.0 for p in series]
    rps = [p["rps"] for p in series]
    return {
        "title": f"{ident}: last hour in 5-minute windows (0 = now)",
        "ylabel": "p99 ms / req/s",
        "series": {"p99 ms": (xs, p99), "req/s": (xs, rps)},
    }


def compare_runs(ws, ids: list[str]) -> str:
    """Runs side by side: every param and metric, one column per run."""
    runs = [ws.runs.get(i) for i in ids]
    keys_p = sorted({k for r in runs for k in r.params})
    keys_m = sorted({k for r in runs for k in r.metrics})
    width = 14
    head = f"{'':24}" + "".join(f"{r.id[:8]:>{width}}" for r in runs)
    lines = [f"Comparing {len(runs)} runs", head, "Params:"]
    for k in keys_p:
        lines.append(
            f"  {k[:22]:22}" + "".join(f"{str(r.params.get(k, '-'))[:12]:>{width}}" for r in runs)
        )
    lines.append("Metrics:")
    for k in keys_m:
        values = [r.metrics.get(k) for r in runs]
        known = [v for v in values if v is not None]
        best = max(known) if known else None
        cells = "".join(
            (
                f"[b]{_num(v):>{width}}[/b]"
                if v == best and len(known) > 1
                else f"{_num(v):>{width}}"
            )
            for v in values
        )
        lines.append(f"  {k[:22]:22}" + cells)
    return "\n".join(lines)


def _models(ws) -> Listing:
    """Every version in two queries (the light columns only: this is the first page of a
    registry with thousands of versions)."""
    with ws.db.read() as conn:
        aliases: dict[tuple[str, int], list[str]] = {}
        for name, alias, version in conn.exec_driver_sql(
            "SELECT model_name, alias, version FROM model_alias ORDER BY alias"
        ):
            aliases.setdefault((name, version), []).append(alias)
        versions = conn.exec_driver_sql(
            "SELECT model_name, version, status, metrics, gates_passed, created_at "
            "FROM model_version ORDER BY model_name, version"
        ).fetchall()
    rows = []
    for name, version, status, metrics, gates, created in versions:
        m = json.loads(metrics or "{}")
        rows.append(
            (
                f"{name}/{version}",
                [
                    f"{name}/{version}",
                    status,
                    ", ".join("@" + a for a in aliases.get((name, version), [])) or "-",
                    "pass" if gates else ("FAIL" if gates is not None and not gates else "-"),
                    _num(m.get("holdout_roc_auc", m.get("holdout_rmse"))),
                    _when(created),
                ],
            )
        )
    return Listing(["version", "status", "aliases", "gates", "metric", "registered"], rows)


def _model_detail(ws, key: str) -> str:
    from mlops_console.registry.cards import card_markdown

    return card_markdown(ws.models.card(key))


def _promote(ws, key: str) -> str:
    move = ws.models.promote(key, reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version or '-'} -> v{move.to_version}"


def _rollback(ws, key: str) -> str:
    move = ws.models.rollback(key.split("/")[0], reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version} -> v{move.to_version}"


def _data(ws) -> Listing:
    rows = []
    for d in ws.data.list():
        for v in ws.data.versions(d["name"]):
            rows.append(
                (
                    f"{d['name']}/{v.version}",
                    [
                        d["name"],
                        f"v{v.version}" + (" *" if v.version == d["current_version"] else ""),
                        v.status,
                        str(v.rows),
                        str(len(v.failed_rules) or "-"),
                        _when(v.created_at),
                    ],
                )
            )
    try:
        views = ws.features.views()
    except Exception:  # a broken view file is shown in its detail, never breaks the list
        views = {}
    for name, view in views.items():
        rows.append(
            (
                f"view:{name}",
                [
                    name,
                    "feature view",
                    "sql" if view.sql else (view.source or "-"),
                    str(len(view.features) or "-"),
                    "-",
                    "-",
                ],
            )
        )
    return Listing(["dataset", "version", "status", "rows", "failed rules", "ingested"], rows)


def _data_detail(ws, key: str) -> str:
    if key.startswith("view:"):
        return json.dumps(ws.features.describe(key[5:]), indent=2, default=str)
    name, version = key.split("/")
    v = ws.data.version(name, int(version))
    lines = [
        f"{name} v{version}: {v.status}, {v.rows} rows",
        "Sources: " + ", ".join(s["path"] for s in v.sources),
        "",
    ]
    if v.failed_rules:
        lines.append("Failing contract rules:")
        lines += [f"  {r['rule']} {r['column'] or ''}: {r['detail']}" for r in v.failed_rules]
        lines.append("")
    prof = ws.data.profile(name, int(version))
    lines.append("Profile (histogram of 20 bins, min to max):")
    for col, p in prof.get("columns", {}).items():
        hist = (p.get("histogram") or {}).get("counts")
        extra = (
            f"{spark(hist) if hist else '':20} min {_num(p.get('min'))} median "
            f"{_num(p.get('quantiles', {}).get('0.5'))} max {_num(p.get('max'))}"
            if "quantiles" in p
            else ", ".join(f"{t['value']}:{t['count']}" for t in p.get("top", [])[:3])
        )
        lines.append(f"  {col[:18]:18} {p['type']:9} nulls {p['nulls']:<6} {extra}")
    if int(version) > 1:
        try:
            d = ws.data.diff(name, int(version) - 1, int(version))
        except Exception as exc:  # e.g. the earlier version was quarantined and removed
            lines += ["", f"Diff with v{int(version) - 1}: not available ({exc})"]
        else:
            lines += ["", f"Diff with v{d['from']}: rows {d['rows'][0]} -> {d['rows'][1]}"]
            sch = d["schema"]
            if sch["added"] or sch["removed"] or sch["type_changed"]:
                lines.append(
                    f"  schema: added {sch['added']}, removed {sch['removed']}, "
                    f"type changed {sch['type_changed']}"
                )
            for col, e in d["columns"].items():
                if e.get("psi") is not None:
                    c = severity(e["psi"] >= 0.2, e["psi"])
                    lines.append(f"  {col[:18]:18} [{c}]psi {_num(e['psi'])}[/]")
    return "\n".join(lines)


def _deployments(ws) -> Listing:
    return Listing(
        ["deployment", "target", "serving", "canary", "status", "endpoint"],
        [
            (
                d["name"],
                [
                    d["name"],
                    d["target"],
                    f"{d['model']} v{d['version']}",
                    f"v{d['canary_version']} {d['canary_percent']:.0f}%"
                    if d["canary_version"]
                    else "-",
                    d["status"],
                    d["endpoint"],
                ],
            )
            for d in ws.deployments.list()
        ],
    )


def _deployment_detail(ws, key: str) -> str:
    st = ws.deployments.status(key)
    hist = ws.deployments.history(key)[-10:]
    lines = [
        json.dumps(
            {
                k: st[k]
                for k in (
                    "name",
                    "target",
                    "model",
                    "version",
                    "canary_version",
                    "status",
                    "endpoint",
                )
            },
            indent=2,
        ),
        "",
        "Live:",
        json.dumps(st["live"], indent=2, default=str)[:1500],
        "",
        *_traffic_lines(ws, key),
        "",
        "History:",
    ]
    lines += [
        f"  {_when(e['at'])} {e['action']} {e['from_version'] or '-'} -> {e['to_version'] or '-'} {e['detail'][:60]}"
        for e in hist
    ]
    return "\n".join(lines)


def _traffic_lines(ws, name: str, window: str = "5m", count: int = 12) -> list[str]:
    """Sparklines of throughput, p99 and errors over the last hour, from the prediction log."""
    try:
        series = ws.monitor.performance_series(name, window, count)
    except Exception as exc:  # no log yet, or unreadable: say so, never fail the pane
        return [f"Traffic: not available ({exc})"]
    last = series[-1]
    return [
        f"Traffic, {count} x {window} (oldest first):",
        f"  req/s   {spark([p['rps'] for p in series])}  now {_num(last['rps'])}",
        f"  p99 ms  {spark([p['p99_ms'] for p in series])}  now {_num(last['p99_ms'])}",
        f"  errors  {spark([p['error_rate'] for p in series])}  now {_num(last['error_rate'])}",
    ]


def _jobs(ws) -> Listing:
    return Listing(
        ["job", "pipeline", "status", "trigger", "created", "outcome"],
        [
            (
                str(j["id"]),
                [
                    str(j["id"]),
                    j["pipeline"],
                    j["status"],
                    j["trigger"],
                    _when(j["created_at"]),
                    j["detail"][:50],
                ],
            )
            for j in ws.jobs.list(limit=500)
            if j["kind"] in ("chain", "score")
        ],
    )


def _automation(ws) -> Listing:
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


def _schedule(verb: str):
    def run(ws, key: str) -> str:
        from mlops_console.automation.client import DaemonClient

        kind, _, ident = key.partition(":")
        if kind != "schedule":
            raise ValueError("select a schedule row (shown while a daemon runs)")
        DaemonClient(ws, timeout=10).call("POST", f"/schedules/{ident}/{verb}")
        return f"schedule {ident}: {verb}d" if verb != "trigger" else f"schedule {ident}: triggered"

    return run


def _job_detail(ws, key: str) -> str:
    if key.startswith("schedule:"):
        return f"Schedule {key[9:]}: z pauses, u resumes, n runs it now (the daemon must run)."
    j = ws.jobs.get(int(key))
    steps = sorted(ws.jobs.list(chain_id=j["id"]), key=lambda s: s["id"])
    lines = [
        f"Job {j['id']} ({j['kind']}) for {j['pipeline']}: {j['status']}",
        j["detail"],
        "",
        "Steps:",
    ]
    lines += [f"  {s['kind']:9} {s['status']:10} {s['detail'][:70]}" for s in steps]
    lines += ["", "Log (tail):", ws.jobs.logs(j["id"], 40)]
    return "\n".join(lines)


def _plugins(ws) -> Listing:
    from mlops_console.plugins import load_plugins

    return Listing(
        ["plugin", "source", "loaded", "provides / error"],
        [
            (
                i.name,
                [
                    i.name,
                    i.source,
                    "yes" if i.loaded else "FAILED",
                    ", ".join(i.provides) if i.loaded else i.error,
                ],
            )
            for i in load_plugins().info
        ],
    )


def daemon_state(ws) -> tuple[bool, str, list[dict[str, Any]]]:
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


def _overview(ws) -> Listing:
    rows = []
    running, line, schedules = daemon_state(ws)
    rows.append(("daemon:", ["daemon", "automation", line, "up" if running else "down"]))
    for d in ws.deployments.list():
        h = _health(ws, d["name"])
        perf, drift = h.get("performance") or {}, h.get("drift") or {}
        split = (
            f" + canary v{d['canary_version']} {d['canary_percent']:.0f}%"
            if d["canary_version"]
            else ""
        )
        drift_state = (
            "[red]DRIFT[/]"
            if drift.get("drifted")
            else ("[yellow]some drift[/]" if drift.get("drifted_columns") else "no drift")
            if drift
            else "drift -"
        )
        rows.append(
            (
                f"deployment:{d['name']}",
                [
                    "deployment",
                    d["name"],
                    f"{d['model']} v{d['version']}{split}",
                    f"{d['status']} | {_num(perf.get('rps'))} req/s | p99 "
                    f"{_num(perf.get('latency_p99_ms'))} ms | err {_num(perf.get('error_rate'))} | "
                    + drift_state,
                ],
            )
        )
    for a in ws.alerts.list("active", limit=20):
        rows.append(
            (
                f"alert:{a['id']}",
                ["alert", f"#{a['id']} {a['rule']}", a["deployment"], f"[red]{a['state']}[/]"],
            )
        )
    for sc in sorted(schedules, key=lambda x: x.get("next_run") or 1e18)[:5]:
        rows.append(
            (
                f"schedule:{sc['id']}",
                [
                    "schedule",
                    sc["pipeline"],
                    sc["trigger"][:40],
                    "on new files"
                    if sc.get("watcher")
                    else ("paused" if sc["paused"] else f"next {_when(sc['next_run'])}"),
                ],
            )
        )
    for m in ws.models.list():
        rows.append(
            (
                f"model:{m['name']}",
                [
                    "model",
                    m["name"],
                    ", ".join(f"@{a}=v{v}" for a, v in m["aliases"].items()) or "-",
                    f"{m['versions']} versions",
                ],
            )
        )
    for r in ws.runs.search(limit=5):
        rows.append((f"run:{r.id}", ["run", r.id[:8], r.experiment, r.status]))
    for j in [j for j in ws.jobs.list(limit=20) if j["kind"] == "chain"][:5]:
        rows.append((f"job:{j['id']}", ["job", str(j["id"]), j["pipeline"], j["status"]]))
    return Listing(["kind", "name", "what", "state"], rows)


def _overview_detail(ws, key: str) -> str:
    kind, _, ident = key.partition(":")
    return {
        "daemon": lambda w, k: daemon_state(w)[1],
        "deployment": _deployment_detail,
        "alert": lambda w, k: _monitoring_detail(w, f"alert:{k}"),
        "schedule": lambda w, k: f"Schedule {k} (see the Automation screen)",
        "model": lambda w, k: _model_detail(w, k),
        "run": _run_detail,
        "job": _job_detail,
    }[kind](ws, ident)


def _health(ws, name: str) -> dict[str, Any]:
    """The last window's measures of a deployment, or what stopped them."""
    try:
        return ws.monitor.measure(name, collect_first=False)
    except Exception as exc:  # a broken log never breaks the screen
        return {"error": str(exc)}


def _monitoring(ws) -> Listing:
    rows = []
    alerts = ws.alerts.list(limit=100)
    active = {}
    for a in alerts:
        if a["state"] in ("open", "acknowledged"):
            active[a["deployment"]] = active.get(a["deployment"], 0) + 1
    for name in ws.monitor.deployments():
        h = _health(ws, name)
        drift = h.get("drift") or {}
        perf = h.get("performance") or {}
        stab = h.get("stability") or {}
        share = drift.get("drift_share")
        colour = "red" if drift.get("drifted") else ("yellow" if share else "green")
        rows.append(
            (
                f"dep:{name}",
                [
                    "deployment",
                    name,
                    f"v{h.get('version', '-')}",
                    str(h.get("rows", 0)),
                    f"[{colour}]{_num(share)}[/]" if drift else "-",
                    ", ".join(drift.get("drifted_columns", []))[:30] or "-",
                    _num(perf.get("latency_p99_ms")),
                    _num(perf.get("error_rate")),
                    _num(stab.get("nan_output_rate")),
                    str(active.get(name, 0)),
                ],
            )
        )
    for a in alerts:
        colour = {"open": "red", "acknowledged": "yellow"}.get(a["state"], "green")
        rows.append(
            (
                f"alert:{a['id']}",
                [
                    "alert",
                    f"#{a['id']} {a['rule']}",
                    a["deployment"],
                    f"[{colour}]{a['state']}[/]",
                    _num(a["value"]),
                    a["measure"],
                    _when(a["opened_at"]),
                    (a["action_result"] or a["action"])[:30],
                    "",
                    "",
                ],
            )
        )
    return Listing(
        [
            "kind",
            "name",
            "version / deployment",
            "rows / state",
            "drift share / value",
            "drifted / measure",
            "p99 ms / opened",
            "errors / action",
            "NaN",
            "alerts",
        ],
        rows,
    )


def _monitoring_detail(ws, key: str) -> str:
    kind, _, ident = key.partition(":")
    if kind == "alert":
        a = ws.alerts.get(int(ident))
        lines = [
            f"Alert #{a['id']} ({a['severity']}): {a['rule']} on {a['deployment']} - {a['state']}",
            a["detail"],
            f"measure {a['measure']} = {_num(a['value'])} (threshold {_num(a['threshold'])}, window {a['window']})",
            f"action: {a['action']} -> {a['action_result'] or '-'}",
            "",
            "History:",
        ]
        lines += [
            f"  {_when(e['at'])} {e['kind']:14} {e['detail'][:70]}"
            for e in ws.alerts.events(a["id"])
        ]
        return "\n".join(lines)
    h = _health(ws, ident)
    if "error" in h:
        return f"{ident}: {h['error']}"
    drift = h.get("drift") or {}
    stab = h.get("stability") or {}
    decay = h.get("decay") or {}
    perf = h.get("performance") or {}
    lines = [
        f"{ident}: {h.get('model')} v{h.get('version')}, {h.get('rows', 0)} rows in the last {h['window']}",
    ]
    if h.get("note"):
        lines.append(f"note: {h['note']}")
    limit = ws.config.monitoring.psi
    if drift:
        lines += ["", "Drift (PSI on the training deciles; KS or JS):"]
        for f in [*drift["features"], drift["prediction"]]:
            c = severity(f.get("drifted", False), f.get("psi"), limit)
            stat = f.get("ks") if f["kind"] == "numeric" else f.get("js")
            verdict = "DRIFT" if f.get("drifted") else "ok"
            lines.append(
                f"  {f['column'][:18]:18} [{c}]psi {_num(f.get('psi')):>8}  "
                f"{'ks' if f['kind'] == 'numeric' else 'js'} {_num(stat):>8}  {verdict}[/]"
            )
    if stab:
        lines += [
            "",
            f"Stability: NaN outputs {_num(stab.get('nan_output_rate'))}, out of range "
            f"{_num(stab.get('out_of_range_rate'))}, saturated {_num(stab.get('saturated_rate'))}"
            + (", [red]COLLAPSED[/]" if stab.get("collapsed") else ""),
        ]
    if decay.get("labelled"):
        lines.append(
            f"Decay ({decay['labelled']} labelled): "
            + ", ".join(
                f"{k} {_num(v)} (trained {_num((decay.get('training') or {}).get(k))})"
                for k, v in (decay.get("metrics") or {}).items()
            )
        )
    lines.append(
        f"Latency p50/p95/p99 ms: {_num(perf.get('latency_p50_ms'))} / "
        f"{_num(perf.get('latency_p95_ms'))} / {_num(perf.get('latency_p99_ms'))}"
    )
    lines += ["", *_traffic_lines(ws, ident)]
    try:
        hist = ws.monitor.history(ident, count=8)[::-1]
        lines.append(
            f"  drift   {spark([(r.get('drift') or {}).get('drift_share') for r in hist])}"
            f"  share of drifted inputs, 8 x {h['window']}"
        )
    except Exception:
        pass
    return "\n".join(lines)


def _ack(ws, key: str) -> str:
    kind, _, ident = key.partition(":")
    if kind != "alert":
        raise ValueError("select an alert row to acknowledge")
    from mlops_console.users import current_user

    a = ws.alerts.acknowledge(int(ident), f"{current_user()} (console)")
    return f"alert #{a['id']} acknowledged"


def _dep_deploy(ws, key: str, answer: str) -> str:
    """`MODEL[@alias|/version] [PERCENT]`: hot-swap, or start a canary at PERCENT."""
    parts = answer.split()
    if not parts:
        raise ValueError("type a model reference, e.g. churn@challenger 10")
    percent = float(parts[1]) if len(parts) > 1 else None
    rec = ws.deployments.deploy(
        parts[0],
        name=key,
        strategy="canary" if percent else "replace",
        canary_percent=percent or 10.0,
    )
    if rec["canary_version"]:
        return f"{key}: canary v{rec['canary_version']} at {rec['canary_percent']:.0f}%"
    return f"{key}: serving v{rec['version']}"


def _dep_stop(ws, key: str) -> str:
    ws.deployments.stop(key)
    return f"{key}: stopped"


def _run_now(ws, key: str) -> str:
    if key.startswith("schedule:"):
        return _schedule("trigger")(ws, key)
    j = ws.jobs.get(int(key))
    new = ws.jobs.submit("chain", j["pipeline"], trigger="console")
    if new["trigger"] != "console":  # one queued chain per pipeline: it runs soon anyway
        return f"chain {new['id']} of {j['pipeline']} is queued already"
    return f"queued chain {new['id']} of {j['pipeline']}"


def _archive(ws, key: str) -> str:
    mv = ws.models.archive(key)
    return f"{mv.ref}: {mv.status}"


def _cancel(ws, key: str) -> str:
    if not key.isdigit():
        raise ValueError("select a job row to cancel (z pauses a schedule)")
    j = ws.jobs.cancel(int(key))
    return f"job {key}: {j['status']}" + (" (cancel requested)" if j["cancel_requested"] else "")


def _dep_promote(ws, key: str) -> str:
    return f"{key}: now serving v{ws.deployments.promote(key, 'from the console')['version']}"


def _dep_rollback(ws, key: str) -> str:
    return f"{key}: serving v{ws.deployments.rollback(key, 'from the console')['version']}"


AREAS = [
    Area(
        "overview",
        "Overview",
        "The daemon, each deployment's health, open alerts, next schedules, models, the "
        "latest runs and chains.",
        _overview,
        _overview_detail,
    ),
    Area(
        "data",
        "Data",
        "Dataset versions: status, contract reports of quarantined versions, profiles with "
        "histograms, the diff with the version before; feature views.",
        _data,
        _data_detail,
    ),
    Area(
        "runs",
        "Runs",
        "Tracked runs with params, metrics and the data they read. space marks runs, v "
        "compares the marked ones side by side; a column header sorts.",
        _runs,
        _run_detail,
        chart=_run_chart,
    ),
    Area(
        "models",
        "Models",
        "Versions, aliases, gates and model cards.",
        _models,
        _model_detail,
        [
            Action("p", "model: promote", "Make the selected version champion", _promote),
            Action("b", "model: rollback", "Move champion back to its previous version", _rollback),
            Action("x", "model: archive", "Archive the selected version", _archive),
        ],
    ),
    Area(
        "deployments",
        "Deployments",
        "What serves where; canaries; history.",
        _deployments,
        _deployment_detail,
        [
            Action("p", "deployment: promote", "Promote the canary", _dep_promote),
            Action("b", "deployment: rollback", "Drop the canary / go back", _dep_rollback),
            Action("s", "deployment: stop", "Stop the selected deployment", _dep_stop),
            Action(
                "d",
                "deployment: deploy",
                "Deploy a version here, or a canary at a percent",
                _dep_deploy,
                ask="MODEL[@alias|/version] [CANARY PERCENT], e.g. churn@challenger 10",
            ),
        ],
    ),
    Area(
        "automation",
        "Automation",
        "Schedules and chains of the daemon: state, steps, logs.",
        _automation,
        _job_detail,
        [
            Action("c", "job: cancel", "Cancel the selected job", _cancel),
            Action(
                "n", "job: run now", "Run the selected job's pipeline (or schedule) now", _run_now
            ),
            Action("z", "schedule: pause", "Pause the selected schedule", _schedule("pause")),
            Action(
                "u", "schedule: resume", "Resume the selected schedule", _schedule("resume"), False
            ),
        ],
    ),
    Area(
        "monitoring",
        "Monitoring",
        "Drift, stability, latency and errors of each deployment's last window; alerts.",
        _monitoring,
        _monitoring_detail,
        [Action("a", "alert: acknowledge", "Acknowledge the selected alert", _ack, False)],
        chart=_monitoring_chart,
    ),
    Area("plugins", "Plugins", "What is loaded, what failed and why.", _plugins, lambda ws, k: k),
]
BY_NAME = {a.name: a for a in AREAS}


def add_plugin_areas() -> list[Area]:
    """Append the areas plugins offer (`mlops_console_areas`) after the built-in ones, once;
    one that is not an Area or takes a taken name is logged and left out."""
    import logging

    from mlops_console.plugins import load_plugins

    if _plugin_areas:
        return _plugin_areas
    for area in load_plugins().console_areas():
        if not isinstance(area, Area) or area.name in BY_NAME:
            logging.getLogger(__name__).warning(
                "console area %r of a plugin left out: not an Area, or its name is taken",
                getattr(area, "name", area),
            )
            continue
        AREAS.append(area)
        BY_NAME[area.name] = area
        _plugin_areas.append(area)
    return _plugin_areas


_plugin_areas: list[Area] = []
