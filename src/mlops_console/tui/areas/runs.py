"""The Runs area: tracked runs, their params and metrics (sparklines and a chart of
stepped metrics), and runs compared side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_console.tui.areas.common import (
    Area,
    Chart,
    Listing,
    Query,
    _num,
    _when,
    spark,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

# the listing's columns -> `RunTracker.page` sorts; any other column is the metric's
SORTS = {"run": "id", "experiment": "experiment", "status": "status", "started": "start_time"}


def _page(ws: Workspace, query: Query) -> Listing:
    """A page of runs, searched and sorted in the store, with each one's primary metric:
    headed by its name when every matching run shares it, else "metric" with the name
    beside each value."""
    found = ws.runs.page(
        query.text,
        SORTS.get(query.sort, "metric") if query.sort else None,
        query.descending,
        query.offset,
        query.limit,
    )
    named = [k for k in found.metrics if k is not None]
    shared = named[0] if len(named) == 1 else None
    return Listing(
        ["run", "experiment", "status", "started", shared or "metric"],
        [
            (
                r.id,
                [
                    r.id[:8],
                    r.experiment,
                    r.status,
                    _when(r.start_time),
                    _metric(r.value, None if shared else r.metric),
                ],
            )
            for r in found.runs
        ],
        total=found.total,
    )


def _metric(value: float | None, key: str | None) -> str:
    """A metric cell: the value, and which metric it is when the column mixes them."""
    if key is None:
        return _num(value)
    return f"{_num(value)} {key.removeprefix('holdout_')}"


def _runs(ws: Workspace) -> Listing:
    return _page(ws, Query())


def _run_detail(ws: Workspace, key: str) -> str:
    r = ws.runs.get(key)
    lines = [f"Run {r.id}", f"{r.experiment} / {r.name}: {r.status}"]
    primary = ws.runs.page(r.id, limit=1).runs
    if primary and primary[0].metric:
        declared = ws.runs.primary_metrics()[0].get(r.tags.get("pipeline", ""))
        how = (
            f"pipeline {r.tags['pipeline']}'s primary_metric"
            if declared
            else "no pipeline declares it: its experiment's first holdout metric"
        )
        lines.append(f"Primary metric: {primary[0].metric} = {_num(primary[0].value)} ({how})")
    lines += ["", "Params:"]
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


def _run_chart(ws: Workspace, key: str) -> Chart | None:
    r = ws.runs.get(key)
    series = {}
    for k in sorted(r.metrics):
        history = ws.runs.metric_history(r.id, k)
        if len(history) > 2:
            series[k] = ([h[0] for h in history], [h[1] for h in history])
    if not series:
        return None
    return {"title": f"run {r.id[:8]}: metrics by step", "ylabel": "value", "series": series}


def compare_runs(ws: Workspace, ids: list[str]) -> str:
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


AREA = Area(
    "runs",
    "Runs",
    "Tracked runs with params, metrics and the data they read. space marks runs, v "
    "compares the marked ones side by side; a column header sorts. The last column is each "
    "run's primary metric (its pipeline's `primary_metric`, on the holdout).",
    _runs,
    _run_detail,
    chart=_run_chart,
    page=_page,
)
