"""Token-guarded admin routes: status, load (hot swap, canary, shadow), promote, rollback;
the changes themselves are `Traffic`'s methods.

A load is validated whole before anything changes: a bad field is a 400 and the versions
being served stay exactly as they were.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops_console.serving.batcher import say
from mlops_console.serving.http import (
    Call,
    HttpError,
    content_type,
    endpoint,
    json_response,
    read_body,
)
from mlops_console.serving.inputs import loads
from mlops_console.serving.model import ServedModel
from mlops_console.serving.traffic import ROLES, TrafficError

if TYPE_CHECKING:
    from mlops_console.serving.server import Server

LOAD_FIELDS = {"path", "role", "percent", "runtime", "digest"}
DIGEST = re.compile(r"[0-9a-f]{64}")
LOAD_SHAPE = 'Send {"path": BUNDLE_FOLDER, "role": "primary"|"canary"|"shadow", "percent": N}.'


def check_host(server: Server, request: Request) -> None:
    """Refuse a Host header that names none of this server's names (DNS rebinding: a web
    page that makes a browser send requests here)."""
    host = request.headers.get("host", "").lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    allowed = {"127.0.0.1", "localhost", "::1", *server.settings.allowed_hosts}
    if server.host not in ("0.0.0.0", "::", ""):
        allowed.add(server.host.lower())
    if name not in allowed and "*" not in allowed:
        raise HttpError(
            421,
            f"Host {host!r} is not a name of this server; add it to MLOPS_ALLOWED_HOSTS "
            "if clients reach the server by that name.",
        )


def authorized(server: Server, request: Request) -> None:
    check_host(server, request)
    if not server.admin_token:
        raise HttpError(403, "Admin operations are disabled: start the server with an admin token.")
    got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(got.encode(), server.admin_token.encode()):
        raise HttpError(401, "A valid admin token is required (Authorization: Bearer TOKEN).")


def _load_request(body) -> tuple[str, str, float, str | None, str | None]:
    if not isinstance(body, dict):
        raise HttpError(400, LOAD_SHAPE)
    unknown = sorted(set(body) - LOAD_FIELDS)
    if unknown:
        raise HttpError(400, f"Unknown field(s) {', '.join(unknown)}. {LOAD_SHAPE}")
    path, role = body.get("path"), body.get("role", "primary")
    if not isinstance(path, str) or not path:
        raise HttpError(400, f"path must be the bundle folder (a string). {LOAD_SHAPE}")
    if role not in ROLES:
        raise HttpError(400, f"role must be primary, canary or shadow, not {role!r}.")
    percent = body.get("percent", 10 if role == "canary" else 0)
    if percent is None:
        percent = 10 if role == "canary" else 0
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise HttpError(400, f"percent must be a number from 0 to 100, not {percent!r}.")
    if not 0 <= percent <= 100:
        raise HttpError(400, f"percent must be from 0 to 100, not {percent}.")
    runtime = body.get("runtime")
    if runtime not in (None, "onnx", "sklearn"):
        raise HttpError(400, f"runtime must be onnx or sklearn, not {runtime!r}.")
    digest = body.get("digest")
    if digest is not None and not (isinstance(digest, str) and DIGEST.fullmatch(digest)):
        raise HttpError(400, "digest must be the bundle's sha256 (64 hex digits).")
    return path, role, float(percent), runtime, digest


def routes(server: Server) -> list[Route]:
    @endpoint(server, "admin")
    async def status(request: Request, call: Call) -> Response:
        authorized(server, request)
        ok, why = server.ready()
        traffic = server.traffic
        return json_response(
            {
                "primary": traffic.primary.describe(),
                "canary": traffic.canary.describe() if traffic.canary else None,
                "canary_percent": traffic.canary_percent,
                "shadow": traffic.shadow.describe() if traffic.shadow else None,
                "primary_stats": server.metrics.window("primary"),
                "canary_stats": server.metrics.window("canary"),
                "shadow_stats": server.metrics.window("shadow"),
                "ready": ok,
                "not_ready_reason": why or None,
                "batcher_restarts": server.metrics.batcher_restarts,
                "swaps": traffic.swaps,
                "rss_mb": _rss_mb(),
                "log_written": server.log.written,
                "log_dropped": server.log.dropped,
                "log_errors": server.log.errors,
                "settings": {
                    "max_body_bytes": server.settings.max_body_bytes,
                    "max_rows": server.settings.max_rows,
                    "impute_missing": server.settings.impute_missing,
                    "max_inflight": server.settings.max_inflight,
                },
            }
        )

    @endpoint(server, "admin")
    async def load(request: Request, call: Call) -> Response:
        authorized(server, request)
        if content_type(request) != "application/json":
            raise HttpError(415, "Send the load request as application/json.")
        raw = await read_body(server, request, call, 64 << 10)
        path, role, percent, runtime, digest = _load_request(loads(raw))
        if digest is None and server.require_digest:
            raise HttpError(
                400,
                "This server loads only bundles the registry vouches for: send their digest "
                "(the version's artifact hash).",
            )
        try:
            new = await asyncio.get_running_loop().run_in_executor(
                None, lambda: ServedModel.from_folder(path, runtime, digest)
            )
        except Exception as exc:  # the old version keeps serving
            say(f"load of {path} failed: {exc}")
            raise HttpError(422, f"The bundle at {path} cannot be loaded: {exc}") from None
        traffic = server.traffic
        if new.name != traffic.primary.name and role != "primary":
            raise HttpError(
                422,
                f"The bundle at {path} holds {new.name!r}; a {role} must be a version of "
                f"{traffic.primary.name!r}.",
            )
        old = traffic.swap(new, role, percent)
        if role == "canary":
            server.metrics.reset_window("canary")
            server.metrics.reset_window("primary")  # the judge compares the two over one window
        elif role == "shadow":
            server.metrics.reset_window("shadow")
        elif old is None or old.ref != new.ref:
            # another version serves: its window (what checks and alerts read) starts now
            server.metrics.reset_window("primary")
        server.retire(old)
        say(
            f"loaded {new.ref} ({new.runtime}) as {role}"
            + (f" at {traffic.canary_percent:g}%" if role == "canary" else "")
        )
        return json_response({"loaded": new.describe(), "role": role})

    @endpoint(server, "admin")
    async def promote(request: Request, call: Call) -> Response:
        authorized(server, request)
        try:
            old = server.traffic.promote()
        except TrafficError as exc:
            raise HttpError(409, str(exc)) from None
        server.metrics.carry_window("canary", "primary")  # its requests since it served
        server.retire(old)
        say(f"promoted canary {server.traffic.primary.ref} to primary")
        return json_response({"primary": server.traffic.primary.describe()})

    @endpoint(server, "admin")
    async def rollback(request: Request, call: Call) -> Response:
        authorized(server, request)
        try:
            dropped = server.traffic.rollback()
        except TrafficError as exc:
            raise HttpError(409, str(exc)) from None
        for old in dropped:
            server.retire(old)
        say(f"rolled back to {server.traffic.primary.ref} only")
        return json_response({"primary": server.traffic.primary.describe()})

    return [
        Route("/admin/status", status, methods=["GET"]),
        Route("/admin/load", load, methods=["POST"]),
        Route("/admin/promote", promote, methods=["POST"]),
        Route("/admin/rollback", rollback, methods=["POST"]),
    ]


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
