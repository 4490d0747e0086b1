"""`mlops console`: lists on the left, a table and a detail pane on the right.

Keys: `:` jump to a screen by name, `/` filter the table, `r` refresh, `?` help, `enter`
details, area actions (e.g. `p` promote) ask for confirmation; `--read-only` disables them.
Each area's actions are bindings of the screen while that area is shown, so the footer
lists them and `[console] keys` remaps them by id. Loading runs in thread workers, so the
UI never freezes; action results come back as Messages; errors become notifications.

This file is longer than a module should be because it is one class: the console's state
and the handlers that change it. What is not that state lives beside it: the areas
(areas/), the daemon listener (listener.py), the prompt and dialog (prompt.py), the area
bindings and messages (bindings.py) and the chart (chart.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Label, ListItem, ListView, Markdown, Static
from textual.worker import Worker, WorkerState, get_current_worker

from mlops_console.tui.areas import AREAS, BY_NAME, Action, Area, Chart, Listing, add_plugin_areas
from mlops_console.tui.areas.common import PAGE, Query, forget_health
from mlops_console.tui.bindings import (
    AREA_ACTION,
    ActionDone,
    ConsoleScreen,
    area_bindings,
)
from mlops_console.tui.chart import ChartPane
from mlops_console.tui.listener import DaemonEvent, DaemonStateChanged, follow_events
from mlops_console.tui.prompt import Confirm, Prompt

if TYPE_CHECKING:
    from rich.text import Text

    from mlops_console.workspace import Workspace

__all__ = ["Confirm", "MlopsConsole", "main"]

# `:` names beside the areas' own: an alias goes to an area, a sub-view also keeps only
# the rows whose key starts with (or, with "!", does not start with) a prefix
VIEWS: dict[str, tuple[str, str]] = {
    "jobs": ("automation", "!schedule:"),
    "chains": ("automation", "!schedule:"),
    "schedules": ("automation", "schedule:"),
    "alerts": ("monitoring", "alert:"),
    "datasets": ("data", "!view:"),
    "views": ("data", "view:"),
    "features": ("data", "view:"),
    "versions": ("models", ""),
    "registry": ("models", ""),
    "experiments": ("runs", ""),
    "serving": ("deployments", ""),
    "deploy": ("deployments", ""),
    "home": ("overview", ""),
    "labs": ("lab", ""),
    "objectives": ("lab", ""),
}
WARM_AFTER_S = 0.3  # a screen's slow work (measuring windows) starts this long after its fill
SIDEBAR_MIN_WIDTH = 100  # narrower terminals start with the sidebar collapsed (ctrl+b)
_MARKUP = re.compile(r"\[/?[a-z #0-9]*\]")
_NUMBER = re.compile(r"^[v#]?(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\s*(?:%|ms|s|x|MB|MiB)?$")
_DIGITS = re.compile(r"(\d+)")


class MlopsConsole(App[None]):
    TITLE = "mlops-console"
    CSS = """
    #areas { width: 18; border-right: solid $primary; }
    #areas.collapsed { display: none; }
    #main { width: 1fr; }
    #table { height: 1fr; }
    #bar { height: 1; background: $boost; color: $text-muted; padding: 0 1; }
    #detail-scroll { height: 1fr; border-top: solid $primary; }
    #detail-md { display: none; }
    .full #detail-md.markdown { display: block; }
    .full #detail.markdown { display: none; }
    .full #table, .full #areas { display: none; }
    #chart { height: 14; display: none; }
    #chart.visible { display: block; }
    #prompt { display: none; }
    #prompt.visible { display: block; }
    #confirm { width: 64; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    Confirm { align: center middle; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("colon", "goto", "Go to", id="goto"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("question_mark,f1", "help", "Help", id="help"),
        Binding("l", "logs", "Logs", id="logs"),
        Binding("f", "follow", "Follow log", show=False, id="follow"),
        Binding("e", "expand", "Full detail", show=False, id="expand"),
        Binding("o", "sort_next", "Sort by next column", show=False, id="sort"),
        Binding("O", "sort_reverse", "Reverse the sort", show=False, id="sort-reverse"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="next-page"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False, id="prev-page"),
        Binding("ctrl+b", "sidebar", "Sidebar", show=False, id="sidebar"),
        Binding("space", "mark", "Mark run", show=False, id="mark"),
        Binding("v", "compare", "Compare marked runs", show=False, id="compare"),
        Binding("U", "start_daemon", "Start daemon", show=False, id="start-daemon"),
        Binding("escape", "esc", "Back / clear filter", show=False, id="back"),
    ]

    def __init__(
        self,
        ws: Workspace,
        read_only: bool = False,
        poll_seconds: float | None = None,
        live: bool = True,
        start_area: str | None = None,
        class_root: Path | None = None,
    ) -> None:
        super().__init__()
        from mlops_console.tui.areas import lab

        lab.set_class_root(class_root)  # the Lab area shows that class (the trainer's view)
        self.ws = ws
        self.read_only = read_only
        cfg = ws.config.console
        self.poll_seconds = poll_seconds if poll_seconds is not None else cfg.poll_seconds
        self.keymap = dict(cfg.keys)  # binding id -> keys (also for the areas' action keys)
        self.live = live
        self.daemon_running = False
        self.events_seen = 0
        self._reload_pending = False
        self._loads_running = 0  # load threads still running (a cancelled worker's too)
        self._loads_lock = threading.Lock()
        self._load_started = 0.0  # when the load under way began (0: none): "loading..."
        self.polls = 0  # polls that loaded the screen
        self._poll_timer: Timer | None = None
        self._detail_key: str | None = None  # the row whose detail the pane shows
        self._detail_text = ""
        self._detail_busy = 0.0  # when the detail under way began (0: none)
        self.following: str | None = None  # the row whose log `f` follows
        self._follow_timer: Timer | None = None
        self.marked: list[str] = []  # runs marked for comparison
        self.pending: tuple[Action, str] | None = None  # an action waiting for its answer
        self.chart_shown: Chart | None = None
        self.sorts: dict[str, tuple[str, bool]] = {}  # area -> (column, descending)
        self.offsets: dict[str, int] = {}  # area -> first row shown
        self.cursor_keys: dict[str, str] = {}  # area -> key of the selected row
        self.view = ""  # a `:` sub-view's key prefix ("alert:", "!schedule:")
        self._warming = False
        self._offered: tuple[str, ...] = ()  # the actions the footer offers now
        self.working: dict[int, str] = {}  # long actions running -> their last status line
        self._stop_listening = threading.Event()  # ends the listener thread when the app exits
        add_plugin_areas()
        self.area = BY_NAME.get(start_area or "", AREAS[0])
        self.listing: Listing | None = None
        self.filter_text = ""
        self.last_message = ""
        self.shown_of = (0, 0)
        self.first_row = 0  # offset of the first row shown, among `shown_of[1]`

    @property
    def _sorted(self) -> tuple[str, bool] | None:
        return self.sorts.get(self.area.name)

    def get_default_screen(self) -> Screen[Any]:
        self.console_screen = ConsoleScreen(id="_default")
        return self.console_screen

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield ListView(
                *[ListItem(Label(a.title), id=f"area-{a.name}") for a in AREAS],
                id="areas",
                initial_index=AREAS.index(self.area),  # its first highlight switches to it
                # folded from the first frame on a narrow terminal (ctrl+b unfolds it)
                classes="collapsed" if self.size.width < SIDEBAR_MIN_WIDTH else "",
            )
            with Vertical(id="main"):
                yield Prompt(id="prompt")
                yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
                yield Static("", id="bar")
                with VerticalScroll(id="detail-scroll"):
                    yield Static("", id="detail")
                    yield Markdown("", id="detail-md")
                    yield ChartPane(id="chart")
        yield Footer()

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self._title()
        self.show_area(self.area.name)
        self.console_screen.query_one("#table", DataTable).focus()
        self._arm_poll()
        self.set_interval(0.25, self._tick, name="status")
        if self.live:
            self.listen()

    def on_unmount(self) -> None:
        self._stop_listening.set()

    def _title(self) -> None:
        self.sub_title = (
            str(self.ws.root)
            + ("  [read-only]" if self.read_only else "")
            + ("  daemon: live" if self.daemon_running else "  daemon: off (U starts one)")
        )

    # --- the status bar: rows shown of how many, sort, filter, loading, long work --------------

    def _tick(self) -> None:
        """Redraw the status bar: it says "loading..." once a load has taken 0.3 s."""
        try:
            self._bar()
        except NoMatches:  # the console is closing: its widgets are gone
            return
        scroll = self.console_screen.query_one("#detail-scroll")
        busy = bool(self._detail_busy and time.monotonic() - self._detail_busy > 0.3)
        if scroll.loading != busy:
            scroll.loading = busy

    def _bar(self) -> None:
        shown, total = self.shown_of
        parts = [self.area.title]
        if self.view:
            parts[0] += f" ({self.view.lstrip('!').rstrip(':') or 'all'}"
            parts[0] += " hidden)" if self.view.startswith("!") else " only)"
        if total:
            parts.append(f"{self.first_row + 1}-{self.first_row + shown} of {total:,}")
        elif self.listing is not None:
            parts.append(
                f"no rows match '{self.filter_text}' (esc clears the filter)"
                if self.filter_text
                else "no rows yet"
            )
        if self.filter_text and total:
            parts.append(f"filter '{self.filter_text}' (esc clears)")
        if self._sorted:
            parts.append(f"sort {self._sorted[0]} {'▼' if self._sorted[1] else '▲'}")
        if total > shown:
            parts.append("[ ] pages")
        if self.following:
            parts.append(f"following {self.following} (f stops)")
        if self._load_started and time.monotonic() - self._load_started > 0.3:
            parts.append("loading...")
        parts += [f"⟳ {line}" for line in list(self.working.values())]
        text = "  ·  ".join(parts)
        bar = self.console_screen.query_one("#bar", Static)
        if getattr(bar, "_text", None) != text:
            bar._text = text  # type: ignore[attr-defined]
            bar.update(_plain(text))

    # --- live updates: the daemon's event stream, polling otherwise ---------------------------

    def _arm_poll(self) -> None:
        """One timer at a time, re-armed by each poll (Dolphie's way): a poll that finds a
        load still running skips its turn, so a slow load never has polls pile up behind
        it, and a load replaced by another (the loads are exclusive) cannot stop polling."""
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self._poll_timer = self.set_timer(self.poll_seconds, self.poll, name="poll")

    def poll(self) -> None:
        self._poll_timer = None
        try:
            # with a daemon, its events also trigger reloads; but another shell's deploy or
            # promotion sends none, so the screen is polled all the same (a load under way
            # refreshes it anyway)
            if not self._loads_running:
                self.polls += 1
                self.load()
        finally:
            self._arm_poll()

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def listen(self) -> None:
        """Follow the daemon's `/events` stream until the console exits (see listener.py)."""
        worker = get_current_worker()
        follow_events(
            self.ws.state / "daemon.sock",
            self.post_message,
            lambda: worker.is_cancelled or self._stop_listening.is_set(),
            self._stop_listening.wait,
        )

    def on_daemon_state_changed(self, message: DaemonStateChanged) -> None:
        if message.running != self.daemon_running:
            self.daemon_running = message.running
            self._title()

    def on_daemon_event(self, message: DaemonEvent) -> None:
        self.events_seen += 1
        event = message.event
        kind = event.get("event", "")
        if kind == "alert":
            a = event.get("alert") or {}
            self.notify(
                f"alert #{a.get('id')} {event.get('kind')}: {a.get('rule')} on "
                f"{a.get('subject') or a.get('deployment')}",
                severity="error" if event.get("kind") == "opened" else "information",
                timeout=8,
            )
        elif kind == "ended" and event.get("status") == "failed":
            self.notify(
                f"job {event.get('job')} failed: {event.get('detail', '')}"[:200],
                severity="warning",
            )
        if not self._reload_pending:  # a burst of events is one reload
            self._reload_pending = True
            self.set_timer(0.5, self._reload)

    def _reload(self) -> None:
        self._reload_pending = False
        self.load()

    def action_start_daemon(self) -> None:
        if self.read_only:
            self.notify(
                "Starting the daemon is disabled: the console runs read-only.", severity="warning"
            )
            return
        if self.daemon_running:
            self.notify("A daemon already runs for this workspace.")
            return
        self.start_daemon()

    @work(thread=True, group="action", exit_on_error=False)
    def start_daemon(self) -> None:
        """Start a background daemon, as `mlops up` does; its events then reach the listener."""
        from mlops_console.automation import lifecycle
        from mlops_console.errors import MlopsError

        self.call_from_thread(self.notify, "Starting the daemon...")
        try:
            st = lifecycle.start(self.ws)
        except MlopsError as exc:  # it did not start: the message names its log
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        text = (
            f"Daemon started (pid {st.pid}); log in {st.log}."
            if st.launched
            else f"A daemon already runs (pid {st.pid})."
        )
        self.call_from_thread(self.notify, text)

    # --- the command palette: this screen's actions, named "area: verb" ------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        key = self.selected_key()
        for action in self.area.actions:
            if key is not None and self._applies(action, key):
                yield SystemCommand(
                    action.name, action.description, lambda a=action: self.start_action(a)
                )
        for area in AREAS:
            yield SystemCommand(
                f"go: {area.title}", area.help, lambda n=area.name: self.show_area(n), False
            )
        yield SystemCommand("console: refresh", "Reload this screen", self.action_refresh)
        if not self.daemon_running and not self.read_only:
            yield SystemCommand(
                "daemon: start", "Start a background daemon", self.action_start_daemon
            )

    # --- navigation --------------------------------------------------------------------------

    def show_area(self, name: str, view: str = "") -> None:
        """Switch screens; a switch starts at the top, with no filter and no sub-view."""
        self.area = BY_NAME[name]
        self.filter_text = ""
        self.view = view
        self.offsets.pop(name, None)
        self.cursor_keys.pop(name, None)
        self.listing = None
        self.shown_of = (0, 0)
        self._stop_following()
        self.console_screen.show_actions(area_bindings(self.area))
        # the old screen's rows go at once: none of them can be acted on from this one
        self.console_screen.query_one("#table", DataTable).clear(columns=True)
        self._offer()
        areas = self.console_screen.query_one("#areas", ListView)
        if areas.index != AREAS.index(self.area):
            areas.index = AREAS.index(self.area)
        self._detail_key = None
        self._show_text(self.area.help + self._keys_text())
        self.console_screen.query_one("#chart", ChartPane).hide()
        self.load()

    def action_key(self, action: Action) -> str:
        """The key of a screen action, after `[console] keys` remapping by its id."""
        return self.keymap.get(action.id, action.key)

    def _keys_text(self) -> str:
        if not self.area.actions:
            return ""
        state = " (disabled: read-only)" if self.read_only else ""
        return (
            "\n\nKeys here"
            + state
            + ":\n"
            + "\n".join(
                f"  {self._keys_shown(self.action_key(a)):10} {a.name} - {a.description}  (id {a.id})"
                for a in self.area.actions
            )
        )

    def _keys_shown(self, keys: str) -> str:
        """Keys as a terminal shows them ("?", "f1", "[", "space"), not Textual's names."""
        return ", ".join(self.get_key_display(Binding(k.strip(), "")) for k in keys.split(","))

    @on(ListView.Highlighted, "#areas")
    def area_highlighted(self, event: ListView.Highlighted) -> None:
        """Moving in the sidebar switches the screen (the highlight never lies)."""
        name = ((event.item.id if event.item else "") or "").removeprefix("area-")
        if name in BY_NAME and name != self.area.name:
            self.show_area(name)

    @on(ListView.Selected, "#areas")
    def area_picked(self, event: ListView.Selected) -> None:
        name = (event.item.id or "").removeprefix("area-")
        if name != self.area.name:
            self.show_area(name)
        self.console_screen.query_one("#table", DataTable).focus()

    def action_sidebar(self) -> None:
        self.console_screen.query_one("#areas").toggle_class("collapsed")

    def _query(self, area: Area) -> Query:
        col, desc = self.sorts.get(area.name, (None, False))
        return Query(
            text=self.filter_text,
            sort=col,
            descending=desc,
            offset=self.offsets.get(area.name, 0),
            limit=PAGE,
        )

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self, warmed: bool = False) -> None:
        with self._loads_lock:
            self._loads_running += 1
        self._load_started = self._load_started or time.monotonic()
        try:
            area = self.area
            query = self._query(area)
            listing = area.page(self.ws, query) if area.page else area.load(self.ws)
            if get_current_worker().is_cancelled:
                return  # a newer load (another screen, filter or page) replaces this one
            self.call_from_thread(self.fill, area, listing, query)
        finally:
            with self._loads_lock:
                self._loads_running -= 1
                if not self._loads_running:
                    self._load_started = 0.0
        if area.warm is not None and not warmed and not self._warming:
            # once the table is painted (its layout and rendering take a few refreshes): a
            # warm-up competing with the paint for the GIL made the switch to its screen
            # two to three times slower
            self._warming = True  # queued: the next load does not queue another
            self.call_from_thread(self.set_timer, WARM_AFTER_S, lambda: self._warm_due(area))

    def _warm_due(self, area: Area) -> None:
        """The queued warm-up, if its screen is still shown (or another that warms the same
        way): one for a screen the user left would take the GIL from the new one's paint."""
        if self.area.warm is not area.warm:
            self._warming = False  # the next load of a screen that warms queues its own
            return
        self.warm(self.area)

    @work(thread=True, exclusive=True, group="warm", exit_on_error=False)
    def warm(self, area: Area) -> None:
        """The area's slow work after its table is shown; if it found something new, the
        screen shown loads again (reading what the warm-up cached) without warming again,
        when it reads the same cache (Overview and Monitoring do)."""
        assert area.warm is not None
        self._warming = True  # a slow warm-up is never stacked under the next poll's
        try:
            changed = area.warm(self.ws)
        finally:
            self._warming = False
        if changed and self.area.warm is area.warm and not get_current_worker().is_cancelled:
            self.call_from_thread(self.load, True)

    def _rows(self, area: Area, listing: Listing) -> tuple[list[tuple[str, list[str]]], int]:
        """This page's rows and the number that match: an area paging in the store has
        filtered, sorted and paged them; otherwise it is done here, in memory."""
        rows = listing.rows
        if self.view:
            prefix = self.view.lstrip("!")
            keep = not self.view.startswith("!")
            rows = [r for r in rows if r[0].startswith(prefix) == keep]
        if listing.total is not None:
            hidden = len(listing.rows) - len(rows)
            return rows, max(listing.total - hidden, len(rows))
        needle = self.filter_text.lower()
        if needle:
            rows = [r for r in rows if any(needle in c.lower() for c in r[1])]
        if self._sorted and self._sorted[0] in listing.columns:
            rows = _sort_rows(rows, listing.columns.index(self._sorted[0]), self._sorted[1])
        offset = self.offsets.get(area.name, 0)
        if offset >= len(rows):
            offset = max(0, (len(rows) - 1) // PAGE * PAGE)
            self.offsets[area.name] = offset
        return rows[offset : offset + PAGE], len(rows)

    def fill(self, area: Area, listing: Listing, query: Query | None = None) -> None:
        if area is not self.area:
            return  # the user moved on meanwhile
        if area.page is not None and query is not None and query != self._query(area):
            return  # rows of a page or filter the user has left (a newer load comes)
        self.listing = listing
        table: DataTable[str] = self.console_screen.query_one("#table", DataTable)
        keep_row = table.cursor_row
        keep_key = self.cursor_keys.get(area.name)
        shown, matched = self._rows(area, listing)
        table.clear(columns=True)
        sort = self._sorted
        # each column as wide as what it shows, measured here: the table's own measure
        # waits for its idle turn, and a frame drawn before it kept header-wide columns
        for i, col in enumerate(listing.columns):
            arrow = (" ▼" if sort[1] else " ▲") if sort and sort[0] == col else ""
            width = max([len(col + arrow), *(_cell_width(cells[i]) for _, cells in shown)])
            table.add_column(col + arrow, key=col, width=min(width, 80))
        for key, cells in shown:
            table.add_row(*cells, key=key)
        self.shown_of = (len(shown), matched)
        self.first_row = self.offsets.get(area.name, 0)
        self._load_started = 0.0  # this load is done ("loading..." goes with it)
        if table.row_count:
            keys = [k for k, _ in shown]
            # the selection stays on its row (by key) when rows come and go around it
            # (or its place, if it went); a new screen or page starts at the top
            row = (
                keys.index(keep_key)
                if keep_key in keys
                else (min(keep_row, len(keys) - 1) if keep_key is not None else 0)
            )
            table.move_cursor(row=row, animate=False, scroll=True)
            self.cursor_keys[area.name] = keys[row]
        else:
            self.cursor_keys.pop(area.name, None)  # nothing to act on
        self._bar()
        self._offer()
        if self.following is None and self._detail_key in {k for k, _ in shown}:
            self.refresh_detail(self._detail_key)  # the detail follows the record

    @on(DataTable.RowHighlighted, "#table")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.cursor_keys[self.area.name] = event.row_key.value
        self._offer()

    def _offer(self) -> None:
        """Redraw the footer when the actions that apply to the selected row change (a
        footer redraw costs tens of milliseconds: never on every cursor move)."""
        key = self.cursor_keys.get(self.area.name)
        offered = (self.area.name, *(a.id for a in self.area.actions if self._applies(a, key)))
        if offered != self._offered:
            self._offered = offered
            self.console_screen.refresh_bindings()

    @on(DataTable.RowSelected, "#table")
    def row_picked(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._stop_following()
            self.show_detail(event.row_key.value)

    def show_detail(self, key: str) -> None:
        """The row's detail (and chart), as asked by the user."""
        self._detail_key = key  # here, at once: a reload's refresh of the old one yields
        self._detail_worker(key)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _detail_worker(self, key: str) -> None:
        self._detail(key)

    @work(thread=True, exclusive=True, group="detail-refresh", exit_on_error=False)
    def refresh_detail(self, key: str) -> None:
        """A reload refreshing the detail shown (never cancelling one the user asked for)."""
        self._detail(key, again=True)

    def _detail(self, key: str, again: bool = False) -> None:
        area = self.area
        if not again:
            self._detail_busy = time.monotonic()
        try:
            text = area.detail(self.ws, key)
            chart = None
            if area.chart is not None:
                try:
                    chart = area.chart(self.ws, key)
                except Exception as exc:  # a chart is a bonus: say why it is missing
                    text += f"\n\n(no chart: {exc})"
        finally:
            self._detail_busy = 0.0
        if get_current_worker().is_cancelled or self._detail_key != key or area is not self.area:
            return
        self.call_from_thread(self._show_text, text, area.detail_markdown)
        self.call_from_thread(self.draw_chart, chart)

    def _show_text(self, text: str | Text, markdown: bool = False) -> None:
        """Put text in the detail pane; Markdown is rendered as such in the full detail."""
        if isinstance(text, str) and text == self._detail_text:
            return  # unchanged: keep the scroll position
        self._detail_text = text if isinstance(text, str) else ""
        static = self.console_screen.query_one("#detail", Static)
        md = self.console_screen.query_one("#detail-md", Markdown)
        static.set_class(markdown, "markdown")
        md.set_class(markdown, "markdown")
        static.update(text)
        if markdown and isinstance(text, str):
            md.update(text)

    def draw_chart(self, chart: Chart | None) -> None:
        """Show a plotext chart under the detail text, or hide the chart area."""
        self.console_screen.query_one("#chart", ChartPane).draw(chart)
        if chart:
            self.chart_shown = chart

    def selected_key(self) -> str | None:
        table: DataTable[str] = self.console_screen.query_one("#table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_expand(self) -> None:
        """`e`: the selected row's detail fills the screen (a model card rendered as
        Markdown), so what is shown is what the area's keys act on; again: back."""
        key = self.selected_key()
        if key is not None and key != self._detail_key and self.following is None:
            self.show_detail(key)
        self.console_screen.query_one("#body").toggle_class("full")
        if self.console_screen.query_one("#body").has_class("full"):
            self.console_screen.query_one("#detail-scroll").focus()
        else:
            self.console_screen.query_one("#table", DataTable).focus()

    # --- prompt: ':' and '/' -------------------------------------------------------------------

    @property
    def prompt(self) -> Prompt:
        return self.console_screen.query_one("#prompt", Prompt)

    def screen_names(self) -> list[str]:
        return [a.name for a in AREAS] + sorted(VIEWS)

    def action_goto(self) -> None:
        self.prompt.ask(
            "goto",
            "screen (tab completes): " + ", ".join(self.screen_names()),
            self.screen_names(),
        )

    def action_filter(self) -> None:
        self.prompt.ask("filter", "filter the rows (enter to apply, esc to clear)")

    def action_esc(self) -> None:
        """Esc: close the prompt, else leave the full detail, stop following, clear the filter."""
        if self.prompt.is_open:
            self.prompt.close()
        elif self.console_screen.query_one("#body").has_class("full"):
            self.action_expand()
        elif self.following:
            self._stop_following()
            self._bar()
        elif self.filter_text or self.view:
            self.view = ""
            self.apply_filter("")

    action_close_prompt = action_esc

    @on(Prompt.Closed)
    def prompt_closed(self, event: Prompt.Closed) -> None:
        if event.mode == "filter":
            self.apply_filter("")
        self.console_screen.query_one("#table", DataTable).focus()

    @on(Prompt.Answered)
    def prompt_answered(self, event: Prompt.Answered) -> None:
        value = event.value
        if event.mode == "ask":
            if self.pending is not None and value:
                action, key = self.pending
                self.confirm_and_perform(action, key, value)
        elif event.mode == "goto":
            self.goto(value)
        else:
            self.apply_filter(value)
        self.console_screen.query_one("#table", DataTable).focus()

    def goto(self, value: str) -> None:
        """`:name`: an area, an alias or a sub-view, by any unambiguous start of its name."""
        value = value.strip().lower().lstrip(":")
        names = self.screen_names()
        match = [n for n in names if n == value] or [n for n in names if n.startswith(value)]
        if not value or not match:
            self.notify(f"No screen {value!r}: try one of {', '.join(names)}.", severity="warning")
            return
        name = match[0]
        if name in BY_NAME:
            self.show_area(name)
        else:
            area, view = VIEWS[name]
            self.show_area(area, view)

    def apply_filter(self, text: str) -> None:
        """Filter from the first page: in memory (instant), or in the store for an area
        that pages there."""
        self.filter_text = text
        self.offsets.pop(self.area.name, None)
        self._refill()

    def _refill(self) -> None:
        """Show the rows again after a filter, sort or page change: from the rows loaded
        (instant), or from the store for an area that pages there."""
        if self.listing is not None and self.area.page is None:
            self.fill(self.area, self.listing)
        else:
            self.load()

    # --- sorting and paging --------------------------------------------------------------------

    def action_sort_next(self) -> None:
        """`o`: sort by the next column (ascending), after the last column back to none."""
        if self.listing is None or not self.listing.columns:
            return
        cols = self.listing.columns
        current = self._sorted[0] if self._sorted else None
        nxt = cols.index(current) + 1 if current in cols else 0
        self._sort(cols[nxt] if nxt < len(cols) else None, False)

    def action_sort_reverse(self) -> None:
        """`O`: the other way round (by the first column if nothing is sorted yet)."""
        if self.listing is None or not self.listing.columns:
            return
        col, desc = self._sorted or (self.listing.columns[0], False)
        self._sort(col, not desc)

    @on(DataTable.HeaderSelected, "#table")
    def sort_by(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it; again reverses."""
        col = str(event.column_key.value)
        self._sort(col, self._sorted == (col, False))

    def _sort(self, col: str | None, descending: bool) -> None:
        if col is None:
            self.sorts.pop(self.area.name, None)
        else:
            self.sorts[self.area.name] = (col, descending)
        self.offsets.pop(self.area.name, None)
        self._refill()

    def action_page(self, step: int) -> None:
        """`]` the next page of rows, `[` the one before."""
        total = self.shown_of[1]
        offset = self.offsets.get(self.area.name, 0) + step * PAGE
        if offset < 0 or offset >= total:
            self.notify("No more rows that way.", timeout=2)
            return
        self.offsets[self.area.name] = offset
        self.cursor_keys.pop(self.area.name, None)
        self._refill()

    # --- actions ---------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load()

    def action_mark(self) -> None:
        key = self.selected_key()
        if self.area.name != "runs" or key is None:
            return
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked.append(key)
        self.notify(f"{len(self.marked)} run(s) marked; v compares them.", timeout=2)

    def action_compare(self) -> None:
        if self.area.name != "runs":
            return
        ids = list(self.marked)
        if len(ids) < 2:
            key = self.selected_key()
            ids = ids + [k for k in [key] if k and k not in ids]
        if len(ids) < 2:
            self.notify("Mark two or more runs with space first.", severity="warning")
            return
        self._detail_key = None
        self.show_compare(ids)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_compare(self, ids: list[str]) -> None:
        from mlops_console.tui.areas import compare_runs

        text = compare_runs(self.ws, ids)
        self.call_from_thread(self._show_text, text)

    def action_logs(self) -> None:
        """`l`: the selected job's or deployment's log in the detail pane (`f` follows it)."""
        key = self.selected_key()
        if key is None:
            self.notify("Select a row first.", severity="warning")
            return
        self._stop_following()
        self._detail_key = None
        self.show_logs(key)

    def action_follow(self) -> None:
        """`f`: follow the selected job's or deployment's log live; again: stop."""
        if self.following:
            self._stop_following()
            self._bar()
            return
        key = self.selected_key()
        if key is None or _log_kind(self.area.name, key) is None:
            self.notify("f follows the log of a job or a deployment: select one.", timeout=3)
            return
        self.following = key
        self._detail_key = None
        self.show_logs(key, follow=True)
        self._follow_timer = self.set_interval(1.0, lambda: self.show_logs(key, follow=True))
        self._bar()

    def _stop_following(self) -> None:
        self.following = None
        if self._follow_timer is not None:
            self._follow_timer.stop()
            self._follow_timer = None

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_logs(self, key: str, follow: bool = False) -> None:
        kind = _log_kind(self.area.name, key)
        ident = key.partition(":")[2] or key
        if kind == "job":
            text = self.ws.jobs.logs(int(ident), 200)
        elif kind == "deployment":
            text = self.ws.deployments.logs(ident, 200)
        else:
            text = "No log here: `l` shows the logs of jobs and deployments."
        if follow and self.following != key:
            return  # stopped meanwhile
        head = f"Log of {key}, followed live (f stops)\n\n" if follow else ""
        self.call_from_thread(self._show_log, head + (text or "(empty log)"), follow)

    def _show_log(self, text: str, follow: bool) -> None:
        self._show_text(_plain(text))
        if follow:
            self.console_screen.query_one("#detail-scroll", VerticalScroll).scroll_end(
                animate=False
            )

    def action_help(self) -> None:
        self._detail_key = None
        lines = []
        for b in Binding.make_bindings(self.BINDINGS):
            keys = self.keymap.get(b.id, b.key) if b.id else b.key
            lines.append(f"  {self._keys_shown(keys):14} {b.description}  (id {b.id})")
        lines.append(f"  {self._keys_shown('ctrl+p'):14} Command palette (every action by name)")
        lines.append(f"  {self._keys_shown('enter'):14} Details of the selected row")
        lines.append(f"  {self._keys_shown('tab'):14} Next pane (sidebar, table, detail)")
        self._show_text(
            f"{self.area.title}: {self.area.help}\n\nKeys everywhere:\n"
            + "\n".join(lines)
            + "\n\n: goes to "
            + ", ".join(self.screen_names())
            + self._keys_text()
        )

    # --- area actions: bindings of the screen, one handler for their results -------------------

    def _applies(self, action: Action, key: str | None) -> bool:
        return key is not None and (action.applies is None or action.applies(key))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """An area's action is offered while its area is shown and it applies to the row
        selected; read-only shows it disabled."""
        if action == "area_action":
            found = [a for a in self.area.actions if a.id == parameters[0]]
            if not found:
                return False
            if not self._applies(found[0], self.cursor_keys.get(self.area.name)):
                return False
            return None if self.read_only else True
        if action == "start_daemon":
            return not self.daemon_running
        if action in ("mark", "compare"):
            return self.area.name == "runs"
        return True

    def action_area_action(self, action_id: str) -> None:
        for action in self.area.actions:
            if action.id == action_id:
                self.start_action(action)
                return

    def on_key(self, event: events.Key) -> None:
        """A disabled area key (read-only) says why it does nothing."""
        if not self.read_only or self.prompt.has_focus or isinstance(self.screen, ModalScreen):
            return
        active = self.screen.active_bindings.get(event.key)
        if active is not None and active.binding.action.startswith(AREA_ACTION):
            event.stop()
            self.notify(
                f"{active.binding.id or active.binding.description} is disabled: the console "
                "runs read-only.",
                severity="warning",
            )

    def start_action(self, action: Action) -> None:
        if self.read_only:
            self.notify(
                f"{action.name} is disabled: the console runs read-only.", severity="warning"
            )
            return
        key = self.selected_key()
        if key is None:
            self.notify("Select a row first.", severity="warning")
            return
        if not self._applies(action, key):
            self.notify(f"{action.name} does not apply to {key}.", severity="warning")
            return
        if action.ask:
            self.pending = (action, key)
            self.prompt.ask("ask", f"{action.name} on {key}: {action.ask}")
            return
        if not action.destructive:
            self.perform(action, key)
            return
        self.confirm_and_perform(action, key)

    @work(thread=True, group="action", exit_on_error=False)
    def confirm_and_perform(self, action: Action, key: str, answer: str | None = None) -> None:
        """Ask in the user's words (the question may read the store), then act on yes."""
        question = f"{action.name} on {key}" + (f": {answer}?" if answer else "?")
        if action.confirm is not None:
            try:
                args = (self.ws, key, answer) if action.ask else (self.ws, key)
                question = action.confirm(*args)
            except Exception as exc:  # it cannot be done (no canary to promote): say why
                self.post_message(ActionDone(action, key, f"failed: {exc}", failed=True))
                return
        if not action.destructive and not action.ask:
            self.call_from_thread(self.perform, action, key, answer)
            return
        self.call_from_thread(
            self.push_screen,
            Confirm(question),
            lambda ok: self._perform_if(ok, action, key, answer),
        )

    def _perform_if(
        self, ok: bool | None, action: Action, key: str, answer: str | None = None
    ) -> None:
        if ok:
            self.perform(action, key, answer)

    @work(thread=True, group="action", exit_on_error=False)
    def perform(self, action: Action, key: str, answer: str | None = None) -> None:
        self.call_from_thread(self.notify, f"{action.name} on {key}...", timeout=2)
        ident = id(get_current_worker())
        kwargs: dict[str, Callable[[str], None]] = {}
        if action.progress:
            self.working[ident] = f"{action.name} on {key}"

            def progress(line: str) -> None:
                self.working[ident] = f"{action.verb}: {line}"[:120]

            kwargs["progress"] = progress
        try:
            args = (self.ws, key, answer) if action.ask else (self.ws, key)
            text = action.run(*args, **kwargs)
        except Exception as exc:  # a failed action is a notification, never a crash
            self.post_message(ActionDone(action, key, f"failed: {exc}", failed=True))
            return
        finally:
            self.working.pop(ident, None)
        self.post_message(ActionDone(action, key, text))

    def on_action_done(self, message: ActionDone) -> None:
        """Every action's result: said, remembered for `last_message`, and the screen reloaded."""
        self.last_message = message.text
        if message.failed:
            self.notify(f"{message.action.name} {message.text}", severity="error")
            return
        self.notify(message.text)
        forget_health(self.ws)  # what it changed is measured again, not read back from 2 s ago
        self.load()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(
                f"{event.worker.name or 'work'} failed: {event.worker.error}", severity="error"
            )


def _log_kind(area: str, key: str) -> str | None:
    """Whose log a row has: "job", "deployment", or None."""
    kind, _, ident = key.partition(":")
    if not ident:
        kind = area
    if kind in ("automation", "job") and (ident or key).isdigit():
        return "job"
    if kind in ("deployments", "deployment", "dep"):
        return "deployment"
    return None


def _cell_width(cell: str) -> int:
    """The width a cell takes on screen (its markup read as the table reads it)."""
    if "[" not in cell:
        return len(cell)
    from rich.text import Text

    try:
        return Text.from_markup(cell).cell_len
    except Exception:  # not markup after all
        return len(cell)


def _sort_key(cell: str) -> tuple[int, float, list[tuple[int, Any]]]:
    """A cell that is a number (maybe "v3", "12%", "4 ms") by its value; any other text
    naturally: its digit runs as numbers (churn/2 before churn/10, dates in order)."""
    text = _MARKUP.sub("", cell).strip()
    m = _NUMBER.match(text)
    if m:
        return (0, float(m.group(1)), [])
    parts = [
        (0, int(p)) if p.isascii() and p.isdigit() else (1, p.lower())
        for p in _DIGITS.split(text)
        if p
    ]
    return (1, 0.0, parts)


def _sort_rows(
    rows: list[tuple[str, list[str]]], col: int, descending: bool
) -> list[tuple[str, list[str]]]:
    """Sorted by one column; empty cells ("-") last whichever the direction."""
    blank = [r for r in rows if _MARKUP.sub("", r[1][col]).strip() in ("", "-")]
    full = [r for r in rows if _MARKUP.sub("", r[1][col]).strip() not in ("", "-")]
    return sorted(full, key=lambda r: _sort_key(r[1][col]), reverse=descending) + blank


def _plain(text: str) -> Text:
    from rich.text import Text

    return Text(text)  # logs are shown as they are, never read as markup


def main(argv: list[str] | None = None) -> None:
    """The `mlops-console` command."""
    import argparse

    from mlops_console.errors import MlopsError
    from mlops_console.workspace import Workspace

    ap = argparse.ArgumentParser(
        prog="mlops-console", description="The mlops-console terminal console."
    )
    ap.add_argument("-w", "--workspace")
    ap.add_argument("--read-only", action="store_true")
    a = ap.parse_args(argv)
    try:
        ws = Workspace.open(a.workspace)
    except MlopsError as exc:
        raise SystemExit(f"Error: {exc}") from None
    run(MlopsConsole(ws, read_only=a.read_only))


def tune_gc() -> None:
    """What was imported and built so far lives as long as the console: frozen, the garbage
    collector no longer walks it in the middle of the first frames (a full collection
    there cost 80 ms at 160x48). Collections then run less often: the rendering of a
    screen switch allocates enough to trigger several (up to a third of a 100-row switch
    in a profile)."""
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 10, 10)  # the young generation collected 14x less often


def run(app: MlopsConsole) -> None:
    """Run the console (see `tune_gc`)."""
    tune_gc()
    app.run()
