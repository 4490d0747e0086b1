"""The real console in a real terminal (tmux): type keys, read the screen.

Every wait is on what the screen (or the registry) shows, with a deadline: the machine
running the tests may be loaded, so a fixed sleep is never the only wait."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops_console.workspace import Workspace
from tests.tui.helpers import small_workspace

WAIT_S = 40  # the longest a step may take on a loaded machine


def ensure_tmux() -> str:
    if not shutil.which("tmux") and shutil.which("apt-get"):
        subprocess.run(
            "apt-get install -y -qq tmux >/dev/null 2>&1 || "
            "(apt-get update -qq && apt-get install -y -qq tmux)",
            shell=True,
            capture_output=True,
        )
    path = shutil.which("tmux")
    if not path:
        pytest.skip("tmux is not installed and cannot be installed here")
    return path


def start_console(tmux: str, root: Path, width: int = 120, height: int = 32) -> str:
    """`mlops console` in a new detached tmux session of that size; returns the session.
    COLUMNS and LINES are unset: readline (imported by pytest) exports 80x24 into this
    process's environment, which tmux would hand on and Textual would believe."""
    session = f"mlops-test-{os.getpid()}-{int(time.time() * 1000)}"
    cmd = f"env -u COLUMNS -u LINES {Path(sys.executable).parent / 'mlops'} -w {root} console"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), cmd],
        check=True,
        env=env,
    )
    return session


def screen(tmux, session) -> str:
    return subprocess.run(
        [tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True
    ).stdout


def keys(tmux, session, *names) -> None:
    for name in names:
        subprocess.run([tmux, "send-keys", "-t", session, name], check=True)


def wait_screen(tmux, session, ok, what: str, seconds: float = WAIT_S) -> str:
    """The screen once `ok(text)` holds; fails with the last screen after `seconds`."""
    deadline = time.time() + seconds
    while True:
        text = screen(tmux, session)
        if ok(text):
            return text
        if time.time() > deadline:
            pytest.fail(f"not on screen after {seconds:.0f} s: {what}\n{text}")
        time.sleep(0.1)


def goto(tmux, session, name: str) -> None:
    """`:` NAME Enter, each key once the screen shows the last one landed."""
    before = screen(tmux, session).splitlines()

    def prompt_open(text: str) -> bool:  # its box, or its hint naming the screens
        new = [ln for ln in text.splitlines() if ln not in before]
        return any("▔▔▔" in ln or ("overview" in ln and "models" in ln) for ln in new)

    keys(tmux, session, ":")
    opened = wait_screen(tmux, session, prompt_open, "the : prompt")
    keys(tmux, session, name)
    wait_screen(
        tmux,
        session,
        lambda t: any(name in ln and ln not in opened for ln in t.splitlines()),
        f"{name!r} typed in the prompt",
    )
    keys(tmux, session, "Enter")


def overview_filled(text: str) -> bool:
    """The Overview's table shows its rows (the model m is one), not only the frame."""
    return "Overview" in text and bool(table_line(text, "m"))


def table_line(text: str, ref: str) -> str:
    """The screen's line of a model version ("m/2"), or "" when it is not shown."""
    pattern = re.compile(rf"(?<![\w/]){re.escape(ref)}(?![\w/])")
    return next((ln for ln in text.splitlines() if pattern.search(ln)), "")


def is_champion(text: str, ref: str) -> bool:
    """The table shows `ref` with the @champion alias (not a dialog's "m@champion")."""
    return bool(re.search(r"(?<!\w)@champion\b", table_line(text, ref)))


def wait_champion_moved(tmux, session, to: int, away: int, what: str) -> str:
    """Wait until the dialog is gone and the screen shows m/`to` @champion, not m/`away`."""
    return wait_screen(
        tmux,
        session,
        lambda t: (
            not dialog_shown(t) and is_champion(t, f"m/{to}") and not is_champion(t, f"m/{away}")
        ),
        what,
    )


def footer(text: str) -> str:
    """The screen's last non-empty line (Textual's Footer), lower-cased."""
    return ([ln for ln in text.splitlines() if ln.strip()] or [""])[-1].lower()


def dialog_shown(text: str) -> bool:
    return bool(re.search(r"\bYes\b", text) and re.search(r"\bNo\b", text))


def champion(root: Path) -> int:
    """m@champion's version, read from the registry (the Python API, not the screen)."""
    ws = Workspace.open(root)
    try:
        return ws.models.resolve("m@champion").version
    finally:
        ws.close()


def test_console_in_tmux(ws):
    tmux = ensure_tmux()
    small_workspace(ws, auto=True, versions=1, job=False)
    session = start_console(tmux, ws.root)
    try:
        wait_screen(tmux, session, overview_filled, "the Overview filled")
        goto(tmux, session, "models")
        # (a frame may show the cells cut to the headers' width before the table's columns
        # are sized to them: wait for the alias, not only the row)
        wait_screen(tmux, session, lambda t: is_champion(t, "m/1"), "m/1 @champion in Models")
        keys(tmux, session, "Enter")
        text = wait_screen(tmux, session, lambda t: "Model card" in t, "the model card")
        assert "Model card: m version 1" in text
        keys(tmux, session, "q")
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)


def test_promote_then_rollback_in_tmux(ws):
    """Models: the footer offers promote and rollback; Enter on a fresh dialog answers No;
    `p` `y` makes the other version champion and `b` `y` brings the first one back."""
    tmux = ensure_tmux()
    small_workspace(ws, auto=True, versions=2, job=False)
    first = champion(ws.root)
    other = 2 if first == 1 else 1
    session = start_console(tmux, ws.root)
    try:
        wait_screen(tmux, session, overview_filled, "the Overview filled")
        goto(tmux, session, "models")
        text = wait_screen(
            tmux,
            session,
            lambda t: is_champion(t, f"m/{first}") and table_line(t, f"m/{other}"),
            "the Models table: m/1 and m/2, one @champion",
        )
        # the footer (the screen's last line) lists the area's actions once the table has
        # the focus back from the prompt
        text = wait_screen(
            tmux,
            session,
            lambda t: all(w in footer(t) for w in ("promote", "rollback")),
            "promote and rollback in the footer",
        )
        # the cursor starts on the table's first row: down to the other version, whatever
        # order the table shows them in
        lines = text.splitlines()
        order = sorted((lines.index(table_line(text, f"m/{v}")), v) for v in (1, 2))
        keys(tmux, session, *["Down"] * [v for _, v in order].index(other))

        keys(tmux, session, "p")
        text = wait_screen(tmux, session, dialog_shown, "the promote confirmation")
        assert re.search(rf"m/{other}\b|\bv{other}\b", text), f"not about v{other}:\n{text}"
        keys(tmux, session, "Enter")  # No has the focus: Enter answers No
        wait_screen(tmux, session, lambda t: not dialog_shown(t), "the dialog closed")
        # a promote would land within this on a loaded machine: watch it does not
        deadline = time.time() + 3
        while time.time() < deadline:
            assert champion(ws.root) == first, "Enter on a fresh dialog promoted"
            time.sleep(0.3)
        assert is_champion(screen(tmux, session), f"m/{first}")

        keys(tmux, session, "p")
        wait_screen(tmux, session, dialog_shown, "the promote confirmation, again")
        keys(tmux, session, "y")
        wait_champion_moved(tmux, session, other, first, f"m/{other} shown @champion")
        assert champion(ws.root) == other, screen(tmux, session)

        keys(tmux, session, "b")
        text = wait_screen(tmux, session, dialog_shown, "the rollback confirmation")
        assert re.search(rf"m/{first}\b|\bv{first}\b|rollback", text), text
        keys(tmux, session, "y")
        wait_champion_moved(tmux, session, first, other, f"m/{first} shown @champion again")
        keys(tmux, session, "q")
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
    assert champion(ws.root) == first  # the registry says so too, not only the screen
