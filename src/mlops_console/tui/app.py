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

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Label, ListItem, ListView, Static
from textual.worker import Worker, WorkerState, get_current_worker

from mlops_console.tui.areas import AREAS, BY_NAME, Action, Area, Chart, Listing, add_plugin_areas
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

PAGE = 100  # rows in the table at once (two screens at 160x48); `/` narrows the rest


class MlopsConsole(App[None]):
    TITLE = "mlops-console"
    CSS = """
    #areas { width: 18; border-right: solid $primary; }
    #main { width: 1fr; }
    #table { height: 1fr; }
    #detail-scroll { height: 1fr; border-top: solid $primary; }
    #chart { height: 14; display: none; }
    #chart.visible { display: block; }
    #prompt { display: none; }
    #prompt.visible { display: block; }
    #confirm { width: 60; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    Confirm { align: center middle; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("colon", "goto", "Go to", id="goto"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("question_mark,f1", "help", "Help", id="help"),
        Binding("l", "logs", "Logs", id="logs"),
        Binding("space", "mark", "Mark", show=False, id="mark"),
        Binding("v", "compare", "Compare marked", show=False, id="compare"),
        Binding("U", "start_daemon", "Start daemon", show=False, id="start-daemon"),
        Binding("escape", "close_prompt", "Back", show=False, id="back"),
    ]

    def __init__(
        self,
        ws: Workspace,
        read_only: bool = False,
        poll_seconds: float | None = None,
        live: bool = True,
    ) -> None:
        super().__init__()
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
        self.polls = 0  # polls that loaded the screen
        self._poll_timer: Timer | None = None
        self._detail_key: str | None = None  # the row whose detail the pane shows
        self.marked: list[str] = []  # runs marked for comparison
        self.pending: tuple[Action, str] | None = None  # an action waiting for its answer
        self.chart_shown: Chart | None = None
        self._sorted: tuple[Any, bool] | None = None  # (column key, reversed)
        self._stop_listening = threading.Event()  # ends the listener thread when the app exits
        add_plugin_areas()
        self.area = AREAS[0]
        self.listing: Listing | None = None
        self.filter_text = ""
        self.last_message = ""
        self.shown_of = (0, 0)

    def get_default_screen(self) -> Screen[Any]:
        self.console_screen = ConsoleScreen(id="_default")
        return self.console_screen

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield ListView(
                *[ListItem(Label(a.title), id=f"area-{a.name}") for a in AREAS], id="areas"
            )
            with Vertical(id="main"):
                yield Prompt(id="prompt")
                yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="detail-scroll"):
                    yield Static("", id="detail")
                    yield ChartPane(id="chart")
        yield Footer()

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self._title()
        self.show_area(self.area.name)
        self._arm_poll()
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
            # with a daemon, its events trigger the reloads (but not of a live area, whose
            # state changes without events); a load under way refreshes anyway
            if not self._loads_running and (self.area.live or not self.daemon_running):
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
        for action in self.area.actions:
            yield SystemCommand(
                action.name, action.description, lambda a=action: self.start_action(a)
            )
        for area in AREAS:
            yield SystemCommand(
                f"go: {area.title}", area.help, lambda n=area.name: self.show_area(n), False
            )
        yield SystemCommand("console: refresh", "Reload this screen", self.action_refresh)
        yield SystemCommand("daemon: start", "Start a background daemon", self.action_start_daemon)

    # --- navigation --------------------------------------------------------------------------

    def show_area(self, name: str) -> None:
        self.area = BY_NAME[name]
        self.filter_text = ""
        self.console_screen.show_actions(area_bindings(self.area))
        self.query_one("#areas", ListView).index = AREAS.index(self.area)
        self._detail_key = None
        self.query_one("#detail", Static).update(self.area.help + self._keys_text())
        self.query_one("#chart", ChartPane).hide()
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
                f"  {self.action_key(a)}  {a.name} - {a.description}  (id {a.id})"
                for a in self.area.actions
            )
        )

    @on(ListView.Selected, "#areas")
    def area_picked(self, event: ListView.Selected) -> None:
        self.show_area((event.item.id or "").removeprefix("area-"))
        self.query_one("#table", DataTable).focus()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        with self._loads_lock:
            self._loads_running += 1
        try:
            area = self.area
            listing = area.load(self.ws)
            self.call_from_thread(self.fill, area, listing)
        finally:
            with self._loads_lock:
                self._loads_running -= 1

    def fill(self, area: Area, listing: Listing) -> None:
        if area is not self.area:
            return  # the user moved on meanwhile
        self.listing = listing
        table: DataTable[str] = self.query_one("#table", DataTable)
        keep = table.cursor_row
        table.clear(columns=True)
        table.add_columns(*listing.columns)
        needle = self.filter_text.lower()
        shown: list[tuple[str, list[str]]] = []
        matched = 0
        for key, cells in listing.rows:
            if needle and not any(needle in c.lower() for c in cells):
                continue
            matched += 1
            if len(shown) < PAGE:  # the first page; `/` narrows the rest down
                shown.append((key, cells))
        for key, cells in shown:
            table.add_row(*cells, key=key)
        self.shown_of = (len(shown), matched)
        if matched > len(shown):
            self.notify(
                f"Showing the first {len(shown)} of {matched} rows; type / to filter.", timeout=3
            )
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))
        if area.live and self._detail_key in {k for k, _ in shown}:
            self.show_detail(self._detail_key)  # the detail follows the record too

    @on(DataTable.RowSelected, "#table")
    def row_picked(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.show_detail(event.row_key.value)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_detail(self, key: str) -> None:
        area = self.area
        self._detail_key = key
        text = area.detail(self.ws, key)
        chart = None
        if area.chart is not None:
            try:
                chart = area.chart(self.ws, key)
            except Exception as exc:  # a chart is a bonus: say why it is missing
                text += f"\n\n(no chart: {exc})"
        self.call_from_thread(self.query_one("#detail", Static).update, text)
        self.call_from_thread(self.draw_chart, chart)

    def draw_chart(self, chart: Chart | None) -> None:
        """Show a plotext chart under the detail text, or hide the chart area."""
        self.query_one("#chart", ChartPane).draw(chart)
        if chart:
            self.chart_shown = chart

    def selected_key(self) -> str | None:
        table: DataTable[str] = self.query_one("#table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # --- prompt: ':' and '/' -------------------------------------------------------------------

    @property
    def prompt(self) -> Prompt:
        return self.query_one("#prompt", Prompt)

    def action_goto(self) -> None:
        self.prompt.ask("goto", "screen name: " + ", ".join(a.name for a in AREAS))

    def action_filter(self) -> None:
        self.prompt.ask("filter", "filter the rows (enter to apply, esc to clear)")

    def action_close_prompt(self) -> None:
        self.prompt.close()

    @on(Prompt.Closed)
    def prompt_closed(self, event: Prompt.Closed) -> None:
        if event.mode == "filter":
            self.apply_filter("")
        self.query_one("#table", DataTable).focus()

    @on(Prompt.Answered)
    def prompt_answered(self, event: Prompt.Answered) -> None:
        value = event.value
        if event.mode == "ask":
            if self.pending is not None and value:
                action, key = self.pending
                self.push_screen(
                    Confirm(f"{action.name} on {key}: {value}?"),
                    lambda ok: self._perform_if(ok, action, key, value),
                )
        elif event.mode == "goto":
            match = [a.name for a in AREAS if a.name.startswith(value.lower())]
            if match:
                self.show_area(match[0])
            else:
                self.notify(f"No screen {value!r}.", severity="warning")
        else:
            self.apply_filter(value)
        self.query_one("#table", DataTable).focus()

    def apply_filter(self, text: str) -> None:
        """Narrow the rows already loaded (no reload: filtering stays instant)."""
        self.filter_text = text
        if self.listing is not None:
            self.fill(self.area, self.listing)
        else:
            self.load()

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
        self.show_compare(ids)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_compare(self, ids: list[str]) -> None:
        from mlops_console.tui.areas import compare_runs

        text = compare_runs(self.ws, ids)
        self._detail_key = None
        self.call_from_thread(self.query_one("#detail", Static).update, text)

    @on(DataTable.HeaderSelected, "#table")
    def sort_by(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it; again reverses."""
        reverse = self._sorted == (event.column_key, False)
        try:
            event.data_table.sort(event.column_key, reverse=reverse)
        except TypeError:
            return
        self._sorted = (event.column_key, reverse)

    def action_logs(self) -> None:
        """`l`: the selected job's or deployment's log in the detail pane."""
        key = self.selected_key()
        if key is None:
            self.notify("Select a row first.", severity="warning")
            return
        self.show_logs(key)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_logs(self, key: str) -> None:
        kind, _, ident = key.partition(":")
        if not ident:
            kind, ident = self.area.name, key
        if kind in ("automation", "job"):
            text = self.ws.jobs.logs(int(ident), 200)
        elif kind in ("deployments", "deployment", "dep"):
            text = self.ws.deployments.logs(ident, 200)
        else:
            text = "No log here: `l` shows the logs of jobs and deployments."
        self._detail_key = None
        self.call_from_thread(
            self.query_one("#detail", Static).update, _plain(text or "(empty log)")
        )

    def action_help(self) -> None:
        self._detail_key = None
        keys = "\n".join(
            f"  {self.keymap.get(b.id, b.key) if b.id else b.key:12} {b.description}  (id {b.id})"
            for b in Binding.make_bindings(self.BINDINGS)
            if b.show
        )
        self.query_one("#detail", Static).update(
            f"{self.area.title}: {self.area.help}\n\nKeys everywhere:\n"
            f"{keys}\n  enter        details{self._keys_text()}"
        )

    # --- area actions: bindings of the screen, one handler for their results -------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """An area's action is offered while its area is shown; read-only shows it disabled."""
        if action == "area_action":
            if not any(a.id == parameters[0] for a in self.area.actions):
                return False
            return None if self.read_only else True
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
        if action.ask:
            self.pending = (action, key)
            self.prompt.ask("ask", f"{action.name} on {key}: {action.ask}")
            return
        if not action.destructive:
            self.perform(action, key)
            return
        self.push_screen(
            Confirm(f"{action.name} on {key}?"), lambda ok: self._perform_if(ok, action, key)
        )

    def _perform_if(
        self, ok: bool | None, action: Action, key: str, answer: str | None = None
    ) -> None:
        if ok:
            self.perform(action, key, answer)

    @work(thread=True, group="action", exit_on_error=False)
    def perform(self, action: Action, key: str, answer: str | None = None) -> None:
        self.call_from_thread(self.notify, f"{action.name} on {key}...", timeout=2)
        try:
            text = action.run(self.ws, key, answer) if action.ask else action.run(self.ws, key)
        except Exception as exc:  # a failed action is a notification, never a crash
            self.post_message(ActionDone(action, key, f"failed: {exc}", failed=True))
            return
        self.post_message(ActionDone(action, key, text))

    def on_action_done(self, message: ActionDone) -> None:
        """Every action's result: said, remembered for `last_message`, and the screen reloaded."""
        self.last_message = message.text
        if message.failed:
            self.notify(f"{message.action.name} {message.text}", severity="error")
            return
        self.notify(message.text)
        self.load()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(
                f"{event.worker.name or 'work'} failed: {event.worker.error}", severity="error"
            )


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
    MlopsConsole(ws, read_only=a.read_only).run()
