"""What every area is made of (Listing, Action, Area) and the cell formatters they share.

An area is data over the Workspace: plain functions that list, detail and act, testable
without a terminal and run in worker threads. Nothing here imports Textual.
"""

from __future__ import annotations

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


@dataclass
class Listing:
    columns: list[str]
    rows: list[tuple[str, list[str]]]  # (key, cells)


@dataclass
class Action:
    key: str
    name: str  # "area: verb" in the command palette
    description: str
    # (ws, row key) -> message; with `ask`, (ws, row key, answer) -> message
    run: Callable[..., str]
    destructive: bool = True  # asks for confirmation first
    ask: str = ""  # a question typed in the prompt; run gets (ws, key, answer)

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
    # rollout's progress): polled even while a daemon runs, and the detail shown for the
    # selected row is refreshed by each poll
    live: bool = False


def health(ws: Workspace, name: str) -> WindowReport | str:
    """The last window's report of a deployment, or what stopped it (a message)."""
    try:
        return ws.monitor.measure(name, collect_first=False)
    except Exception as exc:  # a broken log never breaks the screen
        return str(exc)


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
