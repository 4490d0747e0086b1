"""Processes by pid and start time: a pid alone may have been reused by another program.

A chain runs in its own process group (its pid is the group id). The daemon records the
chain's pid and its start time (field 22 of /proc/PID/stat, in clock ticks since boot);
a process is that chain only if both match, so a daemon that restarts never signals an
unrelated process that happens to have the same pid.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ')'
    return [text[: text.index("(")].strip(), "comm", *text[text.rindex(")") + 2 :].split()]


_MACHINE: dict[int, str | None] = {}  # pid -> machine(): fixed for a process's life


def machine() -> str | None:
    """Where pids mean something: this boot of this host, in this pid namespace (a
    container sharing the workspace has its own). None where /proc cannot tell."""
    pid = os.getpid()
    if pid not in _MACHINE:
        _MACHINE[pid] = _machine()
    return _MACHINE[pid]


def _machine() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{namespace}"


def start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot), or None if it is gone."""
    fields = _stat(pid)
    return int(fields[21]) if fields else None


def is_alive(pid: int, started: int | None = None) -> bool:
    """True if `pid` runs (a zombie does not) and, when given, started at `started`."""
    fields = _stat(pid)
    if fields is None or fields[2] in ("Z", "X"):
        return False
    return started is None or int(fields[21]) == started


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[2] not in ("Z", "X") and int(fields[4]) == pgid:
            out.append(int(entry.name))
    return out


def end_group(pid: int, started: int | None, grace: float = 10.0) -> bool:
    """End the process group led by chain process `pid` if that process is still the one
    that started at `started`: SIGTERM, then SIGKILL after `grace` seconds, then wait until
    no process of the group is left. False if there was nothing of ours to end."""
    if started is None:
        return False
    now = start_time(pid)
    if now is not None and now != started:
        return False  # the pid is another program's now
    # the leader may be gone while its children live on: Linux does not hand out a pid
    # that is still some group's id, so members of group `pid` are the chain's
    if not group_members(pid):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not group_members(pid):
                return True
            time.sleep(0.05)
    return not group_members(pid)


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is our child (a chain this daemon started)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its parent (or init) reaps it
        return
