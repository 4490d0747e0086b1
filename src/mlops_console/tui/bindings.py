"""Area actions as Textual bindings, and the Messages their results and the polls send.

The console's one screen carries the bindings of the area it shows, each with its
action's id: the footer lists them, `[console] keys` remaps them (`App.set_keymap`), and
two areas can use the same key for their own verbs (`p` promotes a model or a canary).
"""

from __future__ import annotations

from textual.binding import Binding, BindingsMap
from textual.message import Message
from textual.screen import Screen

from mlops_console.tui.areas import Action, Area

AREA_ACTION = "app.area_action"  # the action every area binding runs, with the action's id


def area_bindings(area: Area) -> list[Binding]:
    """An area's actions as bindings: key, verb ("promote") for the footer, id for remapping."""
    return [
        Binding(a.key, f"{AREA_ACTION}({a.id!r})", a.verb, tooltip=a.description, id=a.id)
        for a in area.actions
    ]


class ConsoleScreen(Screen[None]):
    """The console's one screen; it carries the bindings of the area shown on it."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._screen_bindings = self._bindings.copy()

    def show_actions(self, bindings: list[Binding]) -> None:
        """Bind these keys (an area's actions) instead of the last area's; the footer is
        redrawn by the app once it knows which of them apply to the selected row."""
        self._bindings = BindingsMap.merge([self._screen_bindings, BindingsMap(bindings)])


class ActionDone(Message):
    """An area action finished: `text` is its result, or why it failed."""

    def __init__(self, action: Action, key: str, text: str, failed: bool = False) -> None:
        super().__init__()
        self.action = action
        self.key = key
        self.text = text
        self.failed = failed
