"""uvicorn's HTTP/1.1 protocols with a deadline on the request head.

uvicorn closes idle keep-alive connections but waits forever for a client that opens a
connection and sends its headers one byte at a time (or never). These protocols close a
connection whose request line and headers are not complete within `header_timeout`
seconds of the connection opening, or of the first byte of the next request on it.
httptools (C, what `uvicorn[standard]` uses) when it is installed; h11 otherwise.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeadDeadline(asyncio.Protocol):
    """The deadline, mixed in before a uvicorn protocol (which sets `loop` and `transport`)."""

    header_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # the request head never came


class GuardedH11Protocol(_HeadDeadline, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()  # still waiting for the rest of the head
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


GuardedProtocol: type[_HeadDeadline]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed
    GuardedProtocol = GuardedH11Protocol
else:

    class GuardedHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the first byte of a request: its head must follow in time

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    GuardedProtocol = GuardedHttpToolsProtocol
