"""`mlops console`: lists on the left, a table and a detail pane on the right.

Keys: `:` jump to a screen by name, `/` filter the table, `r` refresh, `?` help, `enter`
details, area actions (e.g. `p` promote) ask for confirmation; `--read-only` disables them.
Loading runs in thread workers, so the UI never freezes; errors become notifications.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ListItem,
    ListView,
    Static,
)
from textual.worker import get_current_worker

from mlops_console.tui.areas import AREAS, BY_NAME, Action, Listing, add_plugin_areas

PAGE = 100  # rows in the table at once (two screens at 160x48); `/` narrows the rest


class Confirm(ModalScreen[bool]):
    BINDINGS = [
        Binding("escape", "dismiss(False)", "Cancel", id="confirm-cancel"),
        Binding("y", "dismiss(True)", "Yes", id="confirm-yes"),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (esc)", id="no")

    @on(Button.Pressed)
    def answer(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class MlopsConsole(App):
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
        ws,
        read_only: bool = False,
        poll_seconds: float | None = None,
        live: bool = True,
    ):
        super().__init__()
        self.ws = ws
        self.read_only = read_only
        cfg = ws.config.console
        self.poll_seconds = poll_seconds if poll_seconds is not None else cfg.poll_seconds
        self.keymap = dict(cfg.keys)  # binding id -> keys (also for the screens' action keys)
        self.live = live
        self.daemon_running = False
        self.events_seen = 0
        self._reload_pending = False
        self.marked: list[str] = []  # runs marked for comparison
        self.pending: tuple[Action, str] | None = None  # an action waiting for its answer
        self.chart_shown: dict | None = None
        self._stop_listening = threading.Event()  # ends the listener thread when the app exits
        add_plugin_areas()
        self.area = AREAS[0]
        self.listing: Listing | None = None
        self.filter_text = ""
        self.prompt_mode = ""
        self.last_message = ""
        self.shown_of = (0, 0)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield ListView(
                *[ListItem(Label(a.title), id=f"area-{a.name}") for a in AREAS], id="areas"
            )
            with Vertical(id="main"):
                yield Input(placeholder="", id="prompt")
                yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="detail-scroll"):
                    yield Static("", id="detail")
                    yield Vertical(id="chart")  # a plotext chart is mounted here when needed
        yield Footer()

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self._title()
        self.show_area(self.area.name)
        self.set_interval(self.poll_seconds, self.poll)
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

    def poll(self) -> None:
        if not self.daemon_running:  # with a daemon, its events trigger the reloads
            self.load()

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def listen(self) -> None:
        """Follow the daemon's `/events` stream; reconnect when it comes back. Every read
        times out within a second, so the worker ends promptly when the console exits."""
        worker = get_current_worker()
        sock = self.ws.state / "daemon.sock"

        def stopped() -> bool:
            return worker.is_cancelled or self._stop_listening.is_set()

        while not stopped():
            if not sock.exists():
                self._set_daemon(False)
                if self._stop_listening.wait(1.0):
                    return
                continue
            import httpx  # only once a daemon runs: it costs a tenth of a second
            import orjson

            try:
                with (
                    httpx.Client(
                        transport=httpx.HTTPTransport(uds=str(sock)),
                        base_url="http://daemon",
                        timeout=httpx.Timeout(2.0, read=2.0),
                    ) as client,
                    client.stream("GET", "/events") as response,
                ):
                    self._set_daemon(response.status_code == 200)
                    for line in response.iter_lines():
                        if stopped():
                            return
                        if line.startswith("data: "):
                            event = orjson.loads(line[6:])
                            try:
                                self.call_from_thread(self.daemon_event, event)
                            except RuntimeError:  # the app is closing
                                return
            except (httpx.HTTPError, OSError, ValueError):
                self._set_daemon(False)
                if self._stop_listening.wait(1.0):
                    return

    def _set_daemon(self, running: bool) -> None:
        if running != self.daemon_running:
            self.daemon_running = running
            try:
                self.call_from_thread(self._title)
            except RuntimeError:  # the app is closing
                pass

    def daemon_event(self, event: dict) -> None:
        self.events_seen += 1
        kind = event.get("event", "")
        if kind == "alert":
            a = event.get("alert") or {}
            self.notify(
                f"alert #{a.get('id')} {event.get('kind')}: {a.get('rule')} on "
                f"{a.get('deployment')}",
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
        import subprocess
        import sys

        self.call_from_thread(self.notify, "Starting the daemon...")
        proc = subprocess.run(
            # -P: a workspace's own click.py (or any module) is not what `mlops up` imports
            [sys.executable, "-P", "-m", "mlops_console.cli.main", "-w", str(self.ws.root), "up"],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )
        text = (proc.stdout + proc.stderr).strip().splitlines()
        self.call_from_thread(
            self.notify,
            text[-1] if text else "daemon started",
            severity="information" if proc.returncode == 0 else "error",
        )

    # --- the command palette: this screen's actions, named "area: verb" ------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
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
        self.query_one("#areas", ListView).index = AREAS.index(self.area)
        self.query_one("#detail", Static).update(self.area.help + self._keys_text())
        self.query_one("#chart", Vertical).remove_class("visible")
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
        self.show_area(event.item.id.removeprefix("area-"))
        self.query_one("#table", DataTable).focus()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        area = self.area
        listing = area.load(self.ws)
        self.call_from_thread(self.fill, area, listing)

    def fill(self, area, listing: Listing) -> None:
        if area is not self.area:
            return  # the user moved on meanwhile
        self.listing = listing
        table = self.query_one("#table", DataTable)
        keep = table.cursor_row
        table.clear(columns=True)
        table.add_columns(*listing.columns)
        needle = self.filter_text.lower()
        shown = []
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

    @on(DataTable.RowSelected, "#table")
    def row_picked(self, event: DataTable.RowSelected) -> None:
        self.show_detail(event.row_key.value)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def show_detail(self, key: str) -> None:
        area = self.area
        text = area.detail(self.ws, key)
        chart = None
        if area.chart is not None:
            try:
                chart = area.chart(self.ws, key)
            except Exception as exc:  # a chart is a bonus: say why it is missing
                text += f"\n\n(no chart: {exc})"
        self.call_from_thread(self.query_one("#detail", Static).update, text)
        self.call_from_thread(self.draw_chart, chart)

    def draw_chart(self, chart: dict | None) -> None:
        """Show a plotext chart under the detail text, or hide the chart area."""
        box = self.query_one("#chart", Vertical)
        if not chart:
            box.remove_class("visible")
            return
        from textual_plotext import PlotextPlot  # imported on first use: the start stays fast

        plots = box.query(PlotextPlot)
        plot = plots.first() if plots else None
        if plot is None:
            plot = PlotextPlot()
            box.mount(plot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for label, (xs, ys) in chart["series"].items():
            plt.plot(xs, ys, label=label, marker="braille")
        plt.title(chart["title"])
        plt.ylabel(chart.get("ylabel", ""))
        box.add_class("visible")
        plot.refresh()
        self.chart_shown = chart

    def selected_key(self) -> str | None:
        table = self.query_one("#table", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # --- prompt: ':' and '/' -------------------------------------------------------------------

    def action_goto(self) -> None:
        self._open_prompt("goto", "screen name: " + ", ".join(a.name for a in AREAS))

    def action_filter(self) -> None:
        self._open_prompt("filter", "filter the rows (enter to apply, esc to clear)")

    def _open_prompt(self, mode: str, hint: str) -> None:
        self.prompt_mode = mode
        prompt = self.query_one("#prompt", Input)
        prompt.placeholder = hint
        prompt.value = ""
        prompt.add_class("visible")
        prompt.focus()

    def action_close_prompt(self) -> None:
        prompt = self.query_one("#prompt", Input)
        if prompt.has_class("visible"):
            prompt.remove_class("visible")
            if self.prompt_mode == "filter":
                self.apply_filter("")
            self.query_one("#table", DataTable).focus()

    @on(Input.Submitted, "#prompt")
    def prompt_done(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        event.input.remove_class("visible")
        if self.prompt_mode == "ask":
            action, key = self.pending
            if value:
                self.push_screen(
                    Confirm(f"{action.name} on {key}: {value}?"),
                    lambda ok: ok and self.perform(action, key, value),
                )
            self.query_one("#table", DataTable).focus()
            return
        if self.prompt_mode == "goto":
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
        self.call_from_thread(self.query_one("#detail", Static).update, text)

    @on(DataTable.HeaderSelected, "#table")
    def sort_by(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column header sorts by it; again reverses."""
        reverse = getattr(self, "_sorted", None) == (event.column_key, False)
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
        self.call_from_thread(
            self.query_one("#detail", Static).update, _plain(text or "(empty log)")
        )

    def action_help(self) -> None:
        keys = "\n".join(
            f"  {self.keymap.get(b.id, b.key):12} {b.description}  (id {b.id})"
            for b in self.BINDINGS
            if b.show
        )
        self.query_one("#detail", Static).update(
            f"{self.area.title}: {self.area.help}\n\nKeys everywhere:\n"
            f"{keys}\n  enter        details{self._keys_text()}"
        )

    def on_key(self, event) -> None:
        if self.query_one("#prompt", Input).has_focus or isinstance(self.screen, ModalScreen):
            return
        for action in self.area.actions:
            if event.key in self.action_key(action).split(","):
                event.stop()
                self.start_action(action)

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
            self._open_prompt("ask", f"{action.name} on {key}: {action.ask}")
            return

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.perform(action, key)

        if not action.destructive:
            self.perform(action, key)
            return
        self.push_screen(Confirm(f"{action.name} on {key}?"), confirmed)

    @work(thread=True, group="action", exit_on_error=False)
    def perform(self, action: Action, key: str, answer: str | None = None) -> None:
        self.call_from_thread(self.notify, f"{action.name} on {key}...", timeout=2)
        try:
            message = action.run(self.ws, key, answer) if action.ask else action.run(self.ws, key)
        except Exception as exc:  # a failed action is a notification, never a crash
            self.call_from_thread(self.notify, f"{action.name} failed: {exc}", severity="error")
            self.last_message = f"failed: {exc}"
            return
        self.last_message = message
        self.call_from_thread(self.notify, message)
        self.call_from_thread(self.load)

    def on_worker_state_changed(self, event) -> None:
        if event.state.name == "ERROR":
            self.notify(
                f"{event.worker.name or 'work'} failed: {event.worker.error}", severity="error"
            )


def _plain(text: str):
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
