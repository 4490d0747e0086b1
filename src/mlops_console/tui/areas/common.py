"""What every area is made of (Listing, Action, Area) and the cell formatters they share.

An area is data over the Workspace: plain functions that list, detail and act, testable
without a terminal and run in worker threads. Nothing here imports Textual.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_console.formatting import num, when

if TYPE_CHECKING:
    from mlops_console.monitoring.window import WindowReport
    from mlops_console.workspace import Workspace

# {"title", "ylabel", "series": {label: (xs, ys)}}: a plotext chart under the detail
Chart = dict[str, Any]


def _when(ts: float | None) -> str:
    return when(ts, seconds=False)  # each area module imports it: the snapshots freeze it


_num = num


BARS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float | None]) -> str:
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


PAGE = 100  # rows in the table at once (two screens at 160x48); `[` and `]` page


@dataclass
class Query:
    """What the table asks a paging area for (`Area.page`): the filter typed after `/`
    (case-insensitive, matched against what the rows show), the sort column (a name of
    `Listing.columns`) and direction, and one page of rows."""

    text: str = ""
    sort: str | None = None
    descending: bool = False
    offset: int = 0
    limit: int = PAGE


@dataclass
class Listing:
    columns: list[str]
    rows: list[tuple[str, list[str]]]  # (key, cells)
    # rows matching the query in the store when the area pages there (`Area.page`): `rows`
    # is then one page, already filtered and sorted; None: `rows` is everything
    total: int | None = None


@dataclass
class Action:
    key: str
    name: str  # "area: verb" in the command palette
    description: str
    # (ws, row key) -> message; with `ask`, (ws, row key, answer) -> message
    run: Callable[..., str]
    destructive: bool = True  # asks for confirmation first
    ask: str = ""  # a question typed in the prompt; run gets (ws, key, answer)
    # (row key) -> whether the action applies to that row: one that does not is not
    # offered (footer, palette, key) while that row is selected. None: every row.
    applies: Callable[[str], bool] | None = None
    # (ws, row key[, answer]) -> the confirmation question in the user's words, e.g.
    # "Move churn@champion from v2 to v1?" (runs in a worker: it may read the store).
    # None: "<name> on <key>?"
    confirm: Callable[..., str] | None = None
    # long work (training, tests, an ingest): `run` also gets `progress=`, a callable
    # taking one line of status that the console shows live while it runs
    progress: bool = False

    @property
    def id(self) -> str:
        """The binding id for `[console] keys` remapping: "model-promote", "job-run-now"."""
        return self.name.replace(": ", "-").replace(" ", "-")

    @property
    def verb(self) -> str:
        """What the footer calls it: "promote" for "model: promote"."""
        return self.name.partition(": ")[2] or self.name


@dataclass
class Area:
    name: str
    title: str
    help: str
    load: Callable[[Workspace], Listing]
    detail: Callable[[Workspace, str], str]
    actions: list[Action] = field(default_factory=list)
    # (ws, key) -> a Chart or None, computed in the same worker as the detail text
    chart: Callable[[Workspace, str], Chart | None] | None = None
    # (ws) -> rows (key, [kind, name, what, state]) this area adds to the Overview (a
    # plugin's way onto it: the Overview never imports plugins); a row picked there is
    # detailed by this area's `detail` with that key. Fast: it runs in every Overview load.
    overview: Callable[[Workspace], list[tuple[str, list[str]]]] | None = None
    # rows that change with no daemon event (a plugin's own state, such as a fleet
    # rollout's progress, or the Overview's traffic figures): polled even while a daemon
    # runs (the detail shown for the selected row is refreshed by every reload)
    live: bool = False
    # (ws, query) -> one page of rows filtered and sorted in the store, with `total` set:
    # for areas that can hold more rows than a table should (10,000 runs, 100,000 jobs).
    # When set, the console calls it instead of `load`; `load` lists the first page.
    page: Callable[[Workspace, Query], Listing] | None = None
    # the detail is Markdown (a model card): the full-screen detail renders it so
    detail_markdown: bool = False
    # (ws) -> True when it found something new: slow work the console runs after the
    # table is filled (measuring each deployment's window); the area is then reloaded.
    # `load` stays fast by reading what the last warm-up cached.
    warm: Callable[[Workspace], bool] | None = None


# (workspace root, deployment) -> (when measured, the report or what stopped it): the
# Overview and Monitoring lists read it, the areas' warm-up refreshes it after the table
# is shown, so a screen never waits on measuring every deployment's window
_HEALTH: dict[tuple[str, str], tuple[float, WindowReport | str]] = {}
_HEALTH_LOCK = threading.Lock()


def health(ws: Workspace, name: str) -> WindowReport | str:
    """The last window's report of a deployment, or what stopped it (a message); measured
    now, and remembered for `cached_health`."""
    try:
        got: WindowReport | str = ws.monitor.measure(name, collect_first=False)
    except Exception as exc:  # a broken log never breaks the screen
        got = str(exc)
    with _HEALTH_LOCK:
        _HEALTH[(str(ws.root), name)] = (time.time(), got)
    return got


def forget_health(ws: Workspace) -> None:
    """Make the workspace's remembered windows stale (after an action): the next warm-up
    measures them again, and until then the screen still shows them."""
    with _HEALTH_LOCK:
        for key, (_, report) in list(_HEALTH.items()):
            if key[0] == str(ws.root):
                _HEALTH[key] = (0.0, report)


def cached_health(ws: Workspace, name: str) -> tuple[float, WindowReport | str] | None:
    """(when, report) of the deployment's last measured window, or None if never."""
    with _HEALTH_LOCK:
        return _HEALTH.get((str(ws.root), name))


FRESH_S = 2.0  # a window measured this recently is not measured again (Overview <-> Monitoring)


def warm_health(ws: Workspace) -> bool:
    """Measure each deployment's window (the slow part of a screen), unless it was measured
    in the last FRESH_S seconds; True if any changed."""
    changed = False
    for name in ws.monitor.deployments():
        before = cached_health(ws, name)
        if before is not None and time.time() - before[0] < FRESH_S:
            continue
        after = health(ws, name)
        changed = changed or before is None or _brief(before[1]) != _brief(after)
    return changed


def _brief(h: WindowReport | str) -> Any:
    """What a list shows of a report: a change here is worth a reload."""
    if isinstance(h, str):
        return h
    return (h.version, h.rows, h.enough_rows, repr(h.performance), repr(h.drift), repr(h.stability))


def traffic_lines(ws: Workspace, name: str, window: str = "5m", count: int = 12) -> list[str]:
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


def champions(ws: Workspace) -> dict[str, int]:
    """Each model's @champion version, in one query."""
    with ws.db.read() as conn:
        return {
            name: int(version)
            for name, version in conn.exec_driver_sql(
                "SELECT model_name, version FROM model_alias WHERE alias = 'champion'"
            )
        }


def serving_gap(champion: int | None, version: int | None, canary: int | None = None) -> str:
    """A loud note when a deployment does not serve its model's champion (a retrain made
    v3 champion while v2 kept serving), else "". A champion under canary is on its way."""
    if champion is None or version is None or champion == version:
        return ""
    if canary == champion:
        return f"champion v{champion} is the canary"
    return f"NOT SERVING CHAMPION: champion is v{champion}, serving v{version}"
