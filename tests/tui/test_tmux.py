"""The real console in a real terminal (tmux): type keys, read the screen."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tui.helpers import small_workspace


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


def screen(tmux, session) -> str:
    return subprocess.run(
        [tmux, "capture-pane", "-t", session, "-p"], capture_output=True, text=True
    ).stdout


def test_console_in_tmux(ws):
    tmux = ensure_tmux()
    small_workspace(ws, auto=True, versions=1, job=False)
    session = f"mlops-test-{int(time.time() * 1000)}"
    cmd = f"{Path(sys.executable).parent / 'mlops'} -w {ws.root} console"
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "32", cmd], check=True
    )
    try:
        deadline = time.time() + 30
        while "Overview" not in screen(tmux, session) and time.time() < deadline:
            time.sleep(0.2)
        assert "Overview" in screen(tmux, session)
        for key in (":", "models", "Enter"):
            subprocess.run([tmux, "send-keys", "-t", session, key], check=True)
            time.sleep(0.3)
        deadline = time.time() + 20
        while "m/1" not in screen(tmux, session) and time.time() < deadline:
            time.sleep(0.2)
        text = screen(tmux, session)
        assert "m/1" in text and "@champion" in text
        subprocess.run([tmux, "send-keys", "-t", session, "Enter"], check=True)
        deadline = time.time() + 20
        while "Model card" not in screen(tmux, session) and time.time() < deadline:
            time.sleep(0.2)
        assert "Model card: m version 1" in screen(tmux, session)
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
