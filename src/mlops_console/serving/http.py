"""HTTP plumbing shared by every route: JSON answers, the one failure path, bounded bodies.

Every route is wrapped by `endpoint`: whatever it raises becomes a JSON error in the
protocol's shape (MLflow's `{"error_code", "message"}`, v2's `{"error"}`), and every
answer, failures included, is counted by route, status and role, and failed scoring
requests are written to the prediction log, so the canary judge and the alerts see them.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mlops_console.serving.batcher import Unavailable, say
from mlops_console.serving.inputs import BadInput

if TYPE_CHECKING:
    from mlops_console.serving.server import Server

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    421: "MISDIRECTED_REQUEST",
    422: "LOAD_FAILED",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
SCORING = ("invocations", "v2_infer")
# A request with this header (any value; the fleet gate sends "gate") is answered as any
# other but neither logged in the prediction log nor counted as traffic in /metrics: a
# health check's copies of the same rows must not read as drift. It only skips logging.
PROBE_HEADER = "x-mlops-probe"


class HttpError(Exception):
    """A failure with its status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _plain(obj):
    if hasattr(obj, "tolist"):  # numpy arrays of strings, numpy scalars
        return obj.tolist()
    raise TypeError(type(obj).__name__)


def json_bytes(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json_bytes(data),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_body(status: int, message: str, v2: bool) -> dict[str, str]:
    if v2:
        return {"error": message}
    return {"error_code": CODES.get(status, "ERROR"), "message": message}


class BodyBudget:
    """Bytes of request bodies held at once, across requests: a body that would pass the
    budget waits for others to finish (or, sent without a length, is refused with a 503),
    so four large requests at once cannot take the machine's memory."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._freed: asyncio.Event | None = None

    def try_take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    async def take(self, n: int, deadline: float) -> bool:
        while not self.try_take(n):
            if self._freed is None:
                self._freed = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._freed.wait()
            except TimeoutError:
                return False
        return True

    def give(self, n: int) -> None:
        self.used -= n
        if self._freed is not None and n:
            self._freed.set()
            self._freed = None


@dataclass
class Call:
    """What the failure path needs to know about the request in hand."""

    route: str
    request_id: str
    t0: float = field(default_factory=time.perf_counter)
    role: str = "primary"
    version: int | None = None
    rows: int = 0
    held: int = 0  # bytes of the body budget this request holds
    probe: bool = False  # x-mlops-probe: answered as any request, never logged as traffic


def endpoint(
    server: Server, route: str, v2: bool = False
) -> Callable[[Callable[[Request, Call], Awaitable[Response]]], Callable]:
    def wrap(fn):
        async def handler(request: Request) -> Response:
            call = Call(route, request.headers.get("x-request-id") or uuid.uuid4().hex)
            call.probe = bool(request.headers.get(PROBE_HEADER))
            gate = route in SCORING
            if gate:
                if server.inflight >= server.settings.max_inflight:
                    return failure(
                        server,
                        call,
                        503,
                        f"The server is at its limit of {server.settings.max_inflight} requests "
                        "at once (MLOPS_MAX_INFLIGHT); retry shortly.",
                        v2,
                        {"retry-after": "1"},
                    )
                server.inflight += 1
            try:
                response = await fn(request, call)
            except HttpError as exc:
                return failure(server, call, exc.status, exc.message, v2, exc.headers)
            except BadInput as exc:
                return failure(server, call, exc.status, str(exc), v2)
            except Unavailable as exc:
                return failure(server, call, 503, str(exc), v2, {"retry-after": "1"})
            except ClientDisconnect:
                return failure(server, call, 400, "The client closed the connection.", v2)
            except Exception as exc:
                say(f"{route} failed: " + "".join(traceback.format_exception(exc)).strip())
                return failure(
                    server,
                    call,
                    500,
                    f"The server failed on this request ({type(exc).__name__}); "
                    "the details are in the server's log.",
                    v2,
                )
            finally:
                if gate:
                    server.inflight -= 1
                if call.held:
                    server.budget.give(call.held)
                    call.held = 0
            server.metrics.observe(
                route,
                response.status_code,
                time.perf_counter() - call.t0,
                call.rows,
                call.role,
                probe=call.probe,
            )
            return response

        handler.__name__ = fn.__name__
        return handler

    return wrap


def failure(
    server: Server, call: Call, status: int, message: str, v2: bool, headers: dict | None = None
) -> Response:
    """Count, log and answer one failed request."""
    latency = time.perf_counter() - call.t0
    server.metrics.observe(call.route, status, latency, 0, call.role, probe=call.probe)
    if call.route in SCORING and not call.probe:
        server.log.append(
            {
                "ts": time.time(),
                "request_id": call.request_id,
                "role": call.role,
                "status": status,
                "route": call.route,
                "version": call.version
                if call.version is not None
                else server.traffic.primary.version,
                "latency_ms": latency * 1000,
                "rows": 0,
                "error": message[:300],
            }
        )
    return json_response(error_body(status, message, v2), status, headers)


async def read_body(
    server: Server, request: Request, call: Call, limit: int | None = None
) -> bytearray:
    """The body, read as it streams in: refused once it passes `limit` bytes (413), or when
    it does not arrive within the body timeout (408); never held whole before the check.
    The bytes held count against the server's body budget until the request ends."""
    limit = server.settings.max_body_bytes if limit is None else limit
    timeout = server.settings.body_timeout
    too_large = HttpError(
        413,
        f"The body is larger than {limit} bytes (MLOPS_MAX_BODY_BYTES); send fewer rows per "
        "request.",
    )
    busy = HttpError(
        503,
        "The server holds as many request bodies as its memory budget allows "
        "(MLOPS_MAX_BODY_MEMORY); retry shortly.",
        {"retry-after": "1"},
    )
    declared = request.headers.get("content-length")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HttpError(400, "The Content-Length header is not a number.") from None
        if size > limit:
            raise too_large
        if not await server.budget.take(size, deadline):
            raise busy
        call.held += size
    buf = bytearray()
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise HttpError(
                408, f"The body did not arrive within {timeout:g} s (MLOPS_BODY_TIMEOUT)."
            ) from None
        if len(buf) + len(chunk) > limit:
            raise too_large
        buf += chunk
        if len(buf) > call.held:  # no length was sent, or more came than it said
            extra = len(buf) - call.held
            if not server.budget.try_take(extra):
                raise busy
            call.held += extra
    return buf


def content_type(request: Request, default: str = "application/json") -> str:
    return request.headers.get("content-type", default).split(";")[0].strip().lower() or default
