"""The Ray Serve application: our own ASGI app in every replica (`import_path`
`mlops_ray.app:build`), so the MLflow and Open Inference v2 routes, the prediction log and
/metrics are the ones every other target serves.

Which versions serve is the deployment's `user_config` (primary, canary and its share):
Ray hands it to each replica's `reconfigure` in place, without restarting it, so a hot swap,
a canary, a promote or a rollback is one config change and drops no request. Ray Serve
has no weighted split between applications, so the canary's share is drawn inside the
app (`Traffic.pick`), as on a local server.

Prediction-log segments are written to a private folder of each replica; closed ones are
shipped to one `PredictionLogStore` replica of the same application, which the
workstation drains through any replica (`GET /-/mlops/predlogs`, token-guarded).
This module runs inside Ray only: the workstation's side (`target`) never imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import serve

MLOPS_ROUTES = "/-/mlops/"
PREDLOG_PREFIX = "mlops-predlog-"  # + DEPLOYMENT-PID-: a replica's segments on its node
STORE_BYTES = 256 << 20  # segments the store keeps before it drops the oldest
TAKE_BYTES = 8 << 20  # at most this much per GET /-/mlops/predlogs


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class PredictionLogStore:
    """Closed prediction-log segments of every replica, until the workstation takes them."""

    def __init__(self) -> None:
        self.segments: dict[str, bytes] = {}
        self.dropped = 0

    def put(self, name: str, data: bytes) -> None:
        self.segments[name] = data
        while sum(len(v) for v in self.segments.values()) > STORE_BYTES:
            self.segments.pop(next(iter(self.segments)))  # oldest first (insertion order)
            self.dropped += 1

    def take(self, max_bytes: int = TAKE_BYTES) -> dict[str, Any]:
        """Segments up to `max_bytes` (at least one); they stay until acknowledged."""
        out: dict[str, str] = {}
        size = 0
        for name, data in self.segments.items():
            if out and size + len(data) > max_bytes:
                break
            out[name] = data.decode("utf-8", errors="replace")
            size += len(data)
        return {"segments": out, "left": len(self.segments) - len(out), "dropped": self.dropped}

    def ack(self, names: list[str]) -> int:
        return sum(self.segments.pop(n, None) is not None for n in names)


@serve.deployment(name="MlopsModel")
@serve.ingress()
class MlopsModel:
    """One replica: a `Server` over the versions `user_config` names."""

    def __init__(self, store, deployment: str, token_sha256: str, settings: dict[str, str]) -> None:
        self.store = store
        self.deployment = deployment
        self.token_sha256 = token_sha256
        self.settings = settings  # MLOPS_* server settings, as a server's environment
        self.server = None
        self.starlette = None
        self.generation = -1
        self.load_error: str | None = None
        self.loaded: dict[tuple[str, str], Any] = {}  # (path, digest) -> ServedModel
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{PREDLOG_PREFIX}{deployment}-{os.getpid()}-"))
        os.chmod(self.log_dir, 0o700)
        self._adopt_orphans()
        ctx = serve.get_replica_context()
        self.replica = hashlib.sha256(ctx.replica_id.unique_id.encode()).hexdigest()[:8]
        self.shipper: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()  # one change of versions at a time
        self.shipping = asyncio.Lock()

    def _adopt_orphans(self) -> None:
        """Take over the segments of this deployment's replicas that died on this node
        without shipping them (their folder names a pid that is gone): they are shipped
        with this replica's own."""
        prefix = f"{PREDLOG_PREFIX}{self.deployment}-"
        for folder in Path(tempfile.gettempdir()).glob(prefix + "*"):
            pid = folder.name[len(prefix) :].split("-", 1)[0]
            if folder == self.log_dir or not pid.isdigit() or _alive(int(pid)):
                continue
            for seg in [*folder.glob("*.jsonl"), *folder.glob("*.jsonl.open")]:
                name = seg.name.removesuffix(".open")
                with contextlib.suppress(OSError):
                    os.replace(seg, self.log_dir / name)
            shutil.rmtree(folder, ignore_errors=True)

    def __serve_build_asgi_app__(self):
        return _Asgi(self)

    # --- which versions serve -------------------------------------------------------------

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve the versions `config` names. A version that cannot be loaded leaves a
        running replica serving what it served (the error is reported by /-/mlops/status);
        a new replica with nothing to serve fails, so Ray reports the deployment failed."""
        async with self.lock:
            try:
                await self._apply(config)
                self.load_error = None
                self._said(config)
            except Exception as exc:
                self.load_error = f"{type(exc).__name__}: {exc}"
                if self.server is None:
                    raise
                from mlops_console.serving.batcher import say

                say(f"generation {config.get('generation')} not applied: {self.load_error}")
            self.generation = int(config.get("generation", 0))

    def _said(self, config: dict[str, Any]) -> None:
        from mlops_console.serving.batcher import say

        traffic = self.server.traffic
        canary = (
            f"canary {traffic.canary.ref} at {traffic.canary_percent:g}%"
            if traffic.canary
            else "no canary"
        )
        say(f"generation {config.get('generation')}: serving {traffic.primary.ref}; {canary}")

    async def _load(self, spec: dict[str, Any], runtime: str | None):
        from mlops_console.serving.model import ServedModel

        path, digest = str(spec["path"]), spec.get("digest")
        if not digest:  # a pickle is code: only what the registry vouches for is loaded
            raise ValueError(f"the bundle at {path} comes without the registry's digest")
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"the bundle folder {path} is not on Ray node {socket.gethostname()}: the "
                "Ray nodes must see the workspace's folder at the same path (a head on the "
                "workstation or a shared file system)"
            )
        key = (path, digest)
        if key not in self.loaded:
            loop = asyncio.get_running_loop()
            self.loaded[key] = await loop.run_in_executor(
                None, lambda: ServedModel.from_folder(path, runtime, digest)
            )
        return self.loaded[key]

    async def _apply(self, config: dict[str, Any]) -> None:
        runtime = config.get("runtime")
        primary = await self._load(config["primary"], runtime)
        spec = config.get("canary")
        canary = await self._load(spec, runtime) if spec else None
        if canary is not None and canary.name != primary.name:
            raise ValueError(f"a canary must be a version of {primary.name!r}, not {canary.name!r}")
        percent = float(spec.get("percent", 10.0)) if spec else 0.0
        if self.server is None:
            self._start(primary)
        server = self.server
        assert server is not None
        traffic = server.traffic
        before = traffic.served()
        if primary is not traffic.primary:
            traffic.swap(primary, "primary")
        if canary is None:
            traffic.canary, traffic.canary_percent = None, 0.0
        elif canary is not traffic.canary or percent != traffic.canary_percent:
            traffic.swap(canary, "canary", percent)
            server.metrics.reset_window("canary")
            server.metrics.reset_window("primary")  # the judge compares the two over one window
        for old in before:
            server.retire(old)
        served = {id(m) for m in traffic.served()}
        self.loaded = {k: m for k, m in self.loaded.items() if id(m) in served}

    def _start(self, primary) -> None:
        from mlops_console.serving.app import build_app
        from mlops_console.serving.server import Server
        from mlops_console.serving.settings import ServerSettings

        os.umask(0o077)  # prediction logs hold request inputs: owner only
        # no admin token: versions change through user_config, the same on every replica
        self.server = Server(
            primary, self.log_dir, None, ServerSettings.from_env(self.settings), "0.0.0.0"
        )
        self.starlette = build_app(self.server)
        self.server.start()
        self.shipper = asyncio.get_running_loop().create_task(self._ship_forever())

    # --- prediction logs ------------------------------------------------------------------

    async def _ship(self) -> int:
        """Hand closed segments to the store, deleting each once it holds it (one round
        at a time: the timer's and a fetch's)."""
        shipped = 0
        async with self.shipping:
            for seg in sorted(self.log_dir.glob("*.jsonl")):
                name = f"{seg.stem}-{self.replica}.jsonl"
                await self.store.put.remote(name, seg.read_bytes())
                seg.unlink(missing_ok=True)
                shipped += 1
        return shipped

    async def _ship_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._ship()
            except Exception as exc:  # the store restarting: the next round retries
                from mlops_console.serving.batcher import say

                say(f"prediction log segments not shipped yet: {exc}")

    # --- HTTP -------------------------------------------------------------------------------

    async def asgi(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope["type"] == "http" and path.startswith(MLOPS_ROUTES):
            try:
                await self._mlops(scope, receive, send, path[len(MLOPS_ROUTES) :])
            except Exception as exc:  # the store restarting: a JSON answer, never a bare 500
                from mlops_console.serving.batcher import say

                say(f"/-/mlops/{path[len(MLOPS_ROUTES) :]} failed: {type(exc).__name__}: {exc}")
                message = "The prediction-log store is not available; retry."
                await _json(send, 503, {"error_code": "UNAVAILABLE", "message": message})
            return
        if self.starlette is None:
            await _json(send, 503, {"error_code": "UNAVAILABLE", "message": "Still loading."})
            return
        await self.starlette(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _close(self) -> None:
        if self.shipper:
            self.shipper.cancel()
        if self.server is not None:
            await self.server.close()  # closes the open segment
            with contextlib.suppress(Exception):
                await self._ship()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def _authorized(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        got = headers.get(b"authorization", b"").decode(errors="replace")
        got = got.removeprefix("Bearer ").strip()
        digest = hashlib.sha256(got.encode()).hexdigest()
        return bool(got) and hmac.compare_digest(digest, self.token_sha256)

    async def _mlops(self, scope, receive, send, what: str) -> None:
        """status, predlogs and predlogs/ack: the workstation's side, behind the token whose
        sha256 the application was given (the config Ray shows holds only the hash)."""
        if not self._authorized(scope):
            await _json(
                send, 401, {"error_code": "UNAUTHORIZED", "message": "A valid token is required."}
            )
            return
        method = scope.get("method", "GET")
        if what == "status" and method == "GET":
            await _json(send, 200, self._status())
        elif what == "predlogs" and method == "GET":
            if self.server is not None:
                self.server.log.flush()
            await self._ship()
            await _json(send, 200, await self.store.take.remote())
        elif what == "predlogs/ack" and method == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > 1 << 20:
                    await _json(
                        send, 413, {"error_code": "TOO_LARGE", "message": "Too many names."}
                    )
                    return
                if not message.get("more_body"):
                    break
            try:
                names = json.loads(body)["names"]
                assert isinstance(names, list) and all(isinstance(n, str) for n in names)
            except (ValueError, KeyError, TypeError, AssertionError):
                await _json(
                    send, 400, {"error_code": "BAD_REQUEST", "message": 'Send {"names": [...]}.'}
                )
                return
            await _json(send, 200, {"acknowledged": await self.store.ack.remote(names)})
        else:
            await _json(
                send, 404, {"error_code": "NOT_FOUND", "message": f"No route /-/mlops/{what}."}
            )

    def _status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replica": self.replica,
            "generation": self.generation,
            "load_error": self.load_error,
            "pid": os.getpid(),
            "time": time.time(),
        }
        server = self.server
        if server is None:
            return out
        traffic = server.traffic
        ok, why = server.ready()
        return {
            **out,
            "primary": traffic.primary.describe(),
            "canary": traffic.canary.describe() if traffic.canary else None,
            "canary_percent": traffic.canary_percent,
            "primary_stats": server.metrics.window("primary"),
            "canary_stats": server.metrics.window("canary"),
            "ready": ok,
            "not_ready_reason": why or None,
            "swaps": traffic.swaps,
            "log_written": server.log.written,
            "log_dropped": server.log.dropped,
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not ours to take over
        return True
    return True


class _Asgi:
    """The replica's ASGI app (an object with an async __call__, which is how uvicorn's
    lifespan runner, that Ray uses, recognises ASGI 3)."""

    def __init__(self, replica: MlopsModel):
        self.replica = replica

    async def __call__(self, scope, receive, send) -> None:
        await self.replica.asgi(scope, receive, send)


async def _json(send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def build(args: dict[str, Any]):
    """The application Ray builds from the config's `args` (the deployment's name, the
    sha256 of its token, the server settings); replicas, autoscaling and the versions
    come in `deployments`."""
    settings = {str(k): str(v) for k, v in (args.get("settings") or {}).items()}
    return MlopsModel.bind(
        PredictionLogStore.bind(), str(args["deployment"]), str(args["token_sha256"]), settings
    )
