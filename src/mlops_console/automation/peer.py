"""Who is at the other end of a connection to the daemon's Unix socket.

The kernel records the credentials of the process that connected (`SO_PEERCRED`); the
protocol below reads them once per connection and hands them to the app in each
request's ASGI scope (`scope["extensions"]["peer_credentials"]`), where the control
API refuses every uid but the daemon's own. The socket's file mode and the 0700
`.mlops` folder keep others out already; this holds even if one of them is loosened.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import NamedTuple

from uvicorn.protocols.http.h11_impl import H11Protocol

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PeerCredentials(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_credentials(sock) -> PeerCredentials | None:
    """The connected process's pid, uid and gid, or None where the kernel cannot say."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    return PeerCredentials(*_UCRED.unpack(raw))


class PeerCredProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that puts the peer's credentials into every scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        creds = peer_credentials(transport.get_extra_info("socket"))
        app = self.app

        async def with_peer(scope, receive, send):
            scope.setdefault("extensions", {})["peer_credentials"] = creds
            await app(scope, receive, send)

        self.app = with_peer
