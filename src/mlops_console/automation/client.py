"""Talking to a running daemon over its Unix socket (httpx).

httpx loads only once a socket is there to talk to: `mlops status` without a daemon, and
every command that merely checks for one, do not pay its ~50 ms import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    import httpx

    from mlops_console.automation.lifecycle import DaemonPaths
    from mlops_console.workspace import Workspace


class DaemonClient:
    def __init__(self, ws: Workspace | DaemonPaths, timeout: float = 30.0):
        self.sock = ws.state / "daemon.sock"
        self.timeout = timeout

    def _client(self) -> httpx.Client:
        import httpx

        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sock)),
            base_url="http://daemon",
            timeout=self.timeout,
        )

    def available(self) -> bool:
        return self.status() is not None

    def status(self) -> dict[str, Any] | None:
        """The daemon's `/status`, or None when no daemon answers (or answers with an error)."""
        if not self.sock.exists():
            return None
        import httpx

        try:
            with self._client() as c:
                r = c.get("/status")
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def call(self, method: str, path: str, **kw) -> Any:
        if not self.sock.exists():
            raise MlopsError("No daemon runs for this workspace; start one with `mlops up`.")
        import httpx

        try:
            with self._client() as c:
                r = c.request(method, path, **kw)
        except httpx.ConnectError:  # the socket of a daemon that was killed: none runs
            raise MlopsError(
                "No daemon runs for this workspace (its socket is left from one that was "
                "stopped or killed); start one with `mlops up`."
            ) from None
        except httpx.HTTPError as exc:
            raise MlopsError(
                f"The daemon does not answer on {self.sock} ({exc}); `mlops status` "
                "checks it, `mlops up` starts one."
            ) from None
        data = r.json()
        if r.status_code >= 400:
            raise MlopsError(data.get("error", r.text))
        return data
