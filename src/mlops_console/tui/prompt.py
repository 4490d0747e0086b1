"""The one-line prompt above the table (`:` go to, `/` filter, an action's question) and
the confirmation dialog of destructive actions."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label


class Confirm(ModalScreen[bool]):
    """A yes/no question before an action that changes something. No has the focus, so
    Enter (or a stray key) on a fresh dialog never says yes: only `y` or the Yes button."""

    AUTO_FOCUS = "#no"
    BINDINGS = [
        Binding("escape", "dismiss(False)", "Cancel", id="confirm-cancel"),
        Binding("y", "dismiss(True)", "Yes", id="confirm-yes"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(self.question, markup=False)  # it may quote what was typed
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (esc)", id="no")

    @on(Button.Pressed)
    def answer(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Prompt(Input):
    """Hidden until asked; Enter posts `Prompt.Answered` with what it was asked for. With
    suggestions (the `:` screen names), the rest of the first match shows greyed and tab
    (or the right arrow) takes it."""

    BINDINGS = [Binding("tab", "complete", "Complete", show=False)]

    class Answered(Message):
        def __init__(self, mode: str, value: str) -> None:
            super().__init__()
            self.mode = mode  # "goto", "filter" or "ask"
            self.value = value

    class Closed(Message):
        """Esc on an open prompt: nothing was answered."""

        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

    def __init__(self, id: str | None = None) -> None:
        super().__init__(placeholder="", id=id)
        self.mode = ""

    @property
    def is_open(self) -> bool:
        return self.has_class("visible")

    def ask(self, mode: str, hint: str, suggestions: list[str] | None = None) -> None:
        self.mode = mode
        self.placeholder = hint
        self.suggester = SuggestFromList(suggestions, case_sensitive=False) if suggestions else None
        self.value = ""
        self.add_class("visible")
        self.focus()

    def close(self) -> None:
        """Esc: hide the prompt without an answer."""
        if self.is_open:
            self.remove_class("visible")
            self.post_message(self.Closed(self.mode))

    def action_complete(self) -> None:
        """Tab: take the suggestion shown (the cursor at the end takes it, as right does)."""
        if self._suggestion:
            self.value = self._suggestion
            self.cursor_position = len(self.value)

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.remove_class("visible")
        self.post_message(self.Answered(self.mode, event.value.strip()))
