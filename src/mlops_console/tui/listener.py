"""Following the daemon's `/events` stream from a worker thread.

What the stream says comes back to the console as Messages (posting one is safe from any
thread): whether a daemon answers, and each event it sends. The stream reconnects when the
daemon comes back; every read times out within two seconds, so the thread ends promptly
when the console exits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message


class DaemonStateChanged(Message):
    """A daemon answers on the control socket now (or no longer)."""

    def __init__(self, running: bool) -> None:
        super().__init__()
        self.running = running

    def can_replace(self, message: Message) -> bool:
        # only the latest state matters: a flapping socket cannot flood the queue
        return isinstance(message, DaemonStateChanged)


class DaemonEvent(Message):
    """One event of the daemon's stream (a job ended, an alert opened, ...)."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__()
        self.event = event


def follow_events(
    sock: Path,
    post: Callable[[Message], bool],
    stopped: Callable[[], bool],
    wait: Callable[[float], bool],
) -> None:
    """Post a DaemonStateChanged whenever the daemon comes or goes and a DaemonEvent for
    each event, until `stopped()`; `wait(seconds)` sleeps between attempts and returns
    True when the console is closing."""
    running: bool | None = None

    def state(now: bool) -> None:
        nonlocal running
        if now != running:
            running = now
            post(DaemonStateChanged(now))

    while not stopped():
        if not sock.exists():
            state(False)
            if wait(1.0):
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
                state(response.status_code == 200)
                for line in response.iter_lines():
                    if stopped():
                        return
                    if line.startswith("data: ") and not post(DaemonEvent(orjson.loads(line[6:]))):
                        return  # the console is closing
        except (httpx.HTTPError, OSError, ValueError):
            state(False)
            if wait(1.0):
                return
