"""The ASGI app, assembled: the server's state, its routes and the one exception handler;
`run` starts it under uvicorn (`python -m mlops_console.serving.app BUNDLE`).

The parts live beside it: `server` (the state and the scoring path), `traffic` (primary,
canary, shadow), `batcher` (micro-batches), `routes` (scoring, health, metrics, OpenAPI),
`v2` (Open Inference Protocol), `feedback` (labels), `admin` (load, promote, rollback).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from mlops_console.serving import admin, feedback, v2
from mlops_console.serving.batcher import say
from mlops_console.serving.model import ServedModel
from mlops_console.serving.routes import Routes
from mlops_console.serving.server import Server
from mlops_console.serving.settings import ServerSettings

__all__ = ["Server", "build_app", "run"]


def build_app(server: Server) -> Starlette:
    """The Starlette app serving `server`; its lifespan runs the watchdog and the shutdown."""
    main = Routes(server)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        server.start()
        yield
        await server.close()

    app = Starlette(
        routes=[
            *main.routes(),
            *feedback.routes(server),
            *v2.routes(server),
            *admin.routes(server),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: main.not_found, Exception: main.crashed},
    )
    app.state.server = server
    return app


def run(
    bundle_dir: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_dir: str | None = None,
    admin_token: str | None = None,
    runtime: str | None = None,
    digest: str | None = None,
) -> None:
    """Start the server (blocking). `digest` (or MLOPS_BUNDLE_DIGEST): the registry's hash
    of the bundle; bundle.json is checked against it before anything is read from it."""
    # before anything imports pyarrow: Arrow's own allocator keeps the memory a large
    # request used; the system's gives it back (malloc_trim after each large request)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    os.umask(0o077)  # prediction logs hold request inputs and entity keys: owner only
    import uvicorn

    from mlops_console.serving.guard import GuardedProtocol
    from mlops_console.serving.settings import SettingError, secret

    try:
        settings = ServerSettings.from_env()
        admin_token = admin_token or secret(os.environ, "MLOPS_ADMIN_TOKEN")
    except SettingError as exc:
        sys.exit(f"mlops-console server: {exc}")
    digest = digest or os.environ.get("MLOPS_BUNDLE_DIGEST") or None
    try:
        model = ServedModel.from_folder(bundle_dir, runtime, digest)
    except Exception as exc:  # a clear line in the deployment's log, not a traceback
        sys.exit(f"mlops-console server: the bundle at {bundle_dir} cannot be served: {exc}")
    server = Server(
        model,
        Path(log_dir) if log_dir else None,
        admin_token,
        settings,
        host,
    )
    # large requests run in threads: hand the GIL back to the event loop often
    sys.setswitchinterval(0.001)
    say(
        f"serving {model.ref} ({model.runtime}) on {host}:{port}; admin "
        f"{'enabled' if server.admin_token else 'disabled'}; prediction log "
        f"{'in ' + str(log_dir) if log_dir else 'off'}; body cap {settings.max_body_bytes} bytes, "
        f"row cap {settings.max_rows}"
    )
    GuardedProtocol.header_timeout = settings.header_timeout
    config = uvicorn.Config(
        build_app(server),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=GuardedProtocol,
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.max_inflight * 4,
        timeout_keep_alive=5,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Serve an exported mlops-console bundle.")
    ap.add_argument("bundle")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--log-dir")
    ap.add_argument("--runtime", choices=["onnx", "sklearn"])
    ap.add_argument(
        "--digest", help="the registry's sha256 of bundle.json (or MLOPS_BUNDLE_DIGEST)"
    )
    a = ap.parse_args()
    run(a.bundle, a.host, a.port, a.log_dir, runtime=a.runtime, digest=a.digest)
