"""The daemon's control API (Starlette on the daemon's Unix socket).

Only the daemon's owner is served: every request's peer uid (read by
`automation.peer.PeerCredProtocol`) must be the daemon's own, or it gets a 403.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mlops_console.errors import Conflict, InvalidName, MlopsError, NotFound
from mlops_console.names import check_name

if TYPE_CHECKING:
    from mlops_console.automation.daemon import Daemon


def _json(data, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, default=str), status_code=status, media_type="application/json"
    )


class OwnerOnly:
    """ASGI middleware: refuse a request unless its peer's uid is `uid` (fails closed: a
    request without peer credentials in its scope is refused too)."""

    def __init__(self, app, uid: int, on_refused=lambda creds: None):
        self.app, self.uid, self.on_refused = app, uid, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        creds = (scope.get("extensions") or {}).get("peer_credentials")
        if creds is not None and creds.uid == self.uid:
            return await self.app(scope, receive, send)
        self.on_refused(creds)
        who = f"uid {creds.uid}" if creds is not None else "a peer the kernel cannot name"
        response = _json(
            {
                "error": f"This daemon answers only its owner (uid {self.uid}), not {who}. "
                "Run the command as the user who started the daemon."
            },
            403,
        )
        await response(scope, receive, send)


def build_api(d: Daemon) -> OwnerOnly:
    def guarded(fn):
        async def wrapper(request: Request) -> Response:
            try:
                out = fn(request)
                if asyncio.iscoroutine(out):
                    out = await out
                return out if isinstance(out, Response) else _json(out)
            except NotFound as exc:
                return _json({"error": str(exc)}, 404)
            except InvalidName as exc:
                return _json({"error": str(exc)}, 400)
            except MlopsError as exc:
                return _json({"error": str(exc)}, 409)

        return wrapper

    def status(_: Request):
        running = d.ws.jobs.list(status="running", limit=100)
        return {
            "pid": os.getpid(),
            "workspace": str(d.ws.root),
            "started": d.started,
            "uptime_s": time.time() - d.started,
            "running": [j.id for j in running if j.kind == "chain"],
            "queued": len(d.ws.jobs.list(status="queued", limit=1000)),
            "schedules": len(d.schedules()),
            "watching": sorted(d.watcher.pending) if d.watcher.pending else [],
            "watchers": d.watcher.watchers,
        }

    def jobs(request: Request):
        q = request.query_params
        found = d.ws.jobs.list(
            status=q.get("status"), pipeline=q.get("pipeline"), limit=int(q.get("limit", 50))
        )
        return {"jobs": [j.to_dict() for j in found]}

    def job(request: Request):
        j = d.ws.jobs.get(int(request.path_params["id"]))
        steps = sorted(d.ws.jobs.list(chain_id=j.id, limit=100), key=lambda s: s.id)
        return {**j.to_dict(), "steps": [s.to_dict() for s in steps]}

    def job_logs(request: Request):
        return {
            "logs": d.ws.jobs.logs(
                int(request.path_params["id"]), int(request.query_params.get("tail", 200))
            )
        }

    async def submit(request: Request):
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            body = None
        pipeline = body.get("pipeline") if isinstance(body, dict) else None
        if not pipeline:
            return _json({"error": 'Give the pipeline to run: {"pipeline": NAME}.'}, 400)
        # a name only, never a path: the spec says what code runs (estimator = "module:fn")
        check_name("pipeline", pipeline)
        d.ws.pipelines.path(pipeline)  # an error if pipelines/NAME.toml does not exist
        j = d.ws.jobs.submit("chain", pipeline, trigger="manual", max_attempts=d.max_attempts)
        d.event({"event": "triggered", "pipeline": pipeline, "by": "api", "job": j.id})
        return j.to_dict()

    def cancel(request: Request):
        return d.ws.jobs.cancel(int(request.path_params["id"])).to_dict()

    def schedules(_: Request):
        return {"schedules": d.schedules()}

    def schedule_action(request: Request):
        sid, action = request.path_params["id"], request.path_params["action"]
        scheduler = d.scheduler
        if scheduler is None:  # the API answers before the scheduler has started
            raise Conflict("The daemon is still starting; try again in a moment.")
        schedule = scheduler.get(sid)  # NotFound: a 404
        if action == "pause":
            scheduler.pause(sid)  # kept in schedule_state: it survives a restart
        elif action == "resume":
            scheduler.resume(sid)
        elif action == "trigger":
            j = d.ws.jobs.submit(
                schedule.kind, schedule.pipeline, trigger="manual", max_attempts=d.max_attempts
            )
            d.event(
                {
                    "event": "triggered",
                    "pipeline": schedule.pipeline,
                    "by": "trigger-now",
                    "job": j.id,
                }
            )
            return {"schedule": sid, "job": j.to_dict()}
        else:
            return _json({"error": f"Unknown action {action!r}: pause, resume or trigger."}, 400)
        return {"schedules": d.schedules()}

    def deployments(_: Request):
        return {"deployments": [dep.to_dict() for dep in d.ws.deployments.list()]}

    async def events(request: Request):
        async def stream():
            seen = d.event_seq
            yield b": connected\n\n"
            quiet = 0
            while not d.stopping():
                if await request.is_disconnected():
                    break
                new = [e for e in list(d.events) if e["seq"] > seen]
                if new:
                    seen = new[-1]["seq"]
                for e in new:
                    yield (
                        b"event: "
                        + e["event"].encode()
                        + b"\ndata: "
                        + orjson.dumps(e, default=str)
                        + b"\n\n"
                    )
                quiet = 0 if new else quiet + 1
                if quiet >= 4:  # a comment every second: clients can time out reads short
                    quiet = 0
                    yield b": ping\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream")

    def shutdown(_: Request):
        d.shutdown()
        return {"stopping": True}

    routes = [
        Route("/status", guarded(status)),
        Route("/jobs", guarded(jobs), methods=["GET"]),
        Route("/jobs", guarded(submit), methods=["POST"]),
        Route("/jobs/{id:int}", guarded(job)),
        Route("/jobs/{id:int}/logs", guarded(job_logs)),
        Route("/jobs/{id:int}/cancel", guarded(cancel), methods=["POST"]),
        Route("/schedules", guarded(schedules)),
        Route("/schedules/{id}/{action}", guarded(schedule_action), methods=["POST"]),
        Route("/deployments", guarded(deployments)),
        Route("/events", events),
        Route("/shutdown", guarded(shutdown), methods=["POST"]),
    ]

    def refused(creds) -> None:
        d.event({"event": "refused", "peer": creds._asdict() if creds else None})

    async def http_error(request: Request, exc: Exception) -> Response:
        # unknown routes and wrong methods answer JSON too, like every other answer
        from starlette.exceptions import HTTPException

        code = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _json({"error": f"{detail}: {request.method} {request.url.path}"}, code)

    app = Starlette(routes=routes, exception_handlers={404: http_error, 405: http_error})
    return OwnerOnly(app, os.getuid(), on_refused=refused)
