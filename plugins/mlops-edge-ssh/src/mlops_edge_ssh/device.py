"""What the controller does to one device: probe it, send it what it lacks, install a
version, switch, gate, roll back, read its telemetry and logs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shlex
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncssh

from mlops_edge_ssh import layers, transfer
from mlops_edge_ssh.gate import GateResult, GateSettings, Golden, parse_metrics, run_gate
from mlops_edge_ssh.inventory import Device
from mlops_edge_ssh.ssh import (
    KEEPALIVE_COUNT,
    KEEPALIVE_INTERVAL,
    LOST,
    DeviceError,
    Links,
    Unreachable,
    connect,
)

AGENT_SOURCE = (resources.files("mlops_edge_ssh") / "agent.py").read_bytes()
AGENT_SHA = hashlib.sha256(AGENT_SOURCE).hexdigest()
# how long a live link takes to answer a no-op after a failed gate, at most
KEEPALIVE_WAIT = KEEPALIVE_INTERVAL * KEEPALIVE_COUNT


def version_id(model: str, version: int, digest: str) -> str:
    return f"{model}-{version}-{digest[:12]}"


@dataclass
class Target:
    """A model version as the fleet ships it: its bundle's objects in the workspace."""

    model: str
    version: int
    digest: str
    files: list[tuple[str, Path]]  # (sha256, local verified path), bundle.json included

    @property
    def id(self) -> str:
        return version_id(self.model, self.version, self.digest)

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for _, p in self.files)

    @classmethod
    def from_workspace(cls, ws, model: str, version: int, digest: str) -> Target:
        manifest = json.loads(ws.artifacts.get_bytes(digest))
        files = [(digest, ws.artifacts.verify(digest))]
        for meta in manifest["files"].values():
            files.append((meta["sha256"], ws.artifacts.verify(meta["sha256"])))
        return cls(model, version, digest, files)


class DeviceOps:
    def __init__(self, links: Links, dev: Device, *, give_up_after: float = 600.0):
        self.links = links
        self.dev = dev
        self.give_up_after = give_up_after
        self.probe_info: dict[str, Any] | None = None
        self._agent_ready = False

    @property
    def agent_path(self) -> str:
        return f"{self.dev.root}/bin/agent-{AGENT_SHA[:16]}.py"

    async def _ensure_agent(self) -> None:
        if self._agent_ready:
            return
        root = shlex.quote(self.dev.root)
        path = shlex.quote(self.agent_path)
        res = await self.links.run(
            self.dev,
            [
                "sh",
                "-c",
                f"umask 077; mkdir -p {root}/bin && test -f {path} && echo present || true",
            ],
        )
        if res.exit_status != 0:
            raise DeviceError(self.dev.name, f"cannot create {self.dev.root}: {res.stderr.strip()}")
        if "present" not in res.stdout:
            conn = await self.links.get(self.dev)
            try:
                async with conn.start_sftp_client() as sftp:
                    tmp = self.agent_path + ".tmp"
                    async with sftp.open(tmp, "wb") as fh:
                        await fh.write(AGENT_SOURCE)
                    await sftp.chmod(tmp, 0o600)
                    await sftp.posix_rename(tmp, self.agent_path)
            except LOST as e:
                self.links.drop(self.dev)
                raise Unreachable(self.dev.name, f"the link dropped ({e}).") from None
        self._agent_ready = True

    async def agent(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> dict[str, Any]:
        await self._ensure_agent()
        res = await self.links.run(
            self.dev,
            [self.dev.python, "-I", self.agent_path, self.dev.root, *args],
            input=input,
            timeout=timeout,
        )
        line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        try:
            doc = json.loads(line)
        except ValueError:
            raise DeviceError(
                self.dev.name,
                f"the device agent answered no JSON (exit {res.exit_status}): "
                f"{(res.stderr or res.stdout).strip()[-400:]}",
            ) from None
        if check and not doc.get("ok"):
            err = DeviceError(self.dev.name, str(doc.get("error")))
            err.detail = doc  # type: ignore[attr-defined]
            raise err
        return doc

    async def probe(self) -> dict[str, Any]:
        self.probe_info = await self.agent("probe", timeout=60)
        return self.probe_info

    def platform(self) -> layers.Platform:
        info = self.probe_info or {}
        libc = f"{info.get('libc') or 'glibc'} {info.get('libc_version') or ''}".strip()
        return layers.Platform.parse(
            str(info.get("machine", "")), str(info.get("python", "")), libc
        )

    async def send(
        self, items: list[tuple[str, Path]], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Send the objects the device lacks; resumes after cuts. Stats summed."""
        compress = bool((self.probe_info or {}).get("zstd"))
        conn = await self.links.get(self.dev)
        try:
            lacking = await transfer.missing_objects(conn, self.dev.root, [s for s, _ in items])
        except LOST as e:
            self.links.drop(self.dev)
            raise Unreachable(self.dev.name, f"the link dropped ({e}).") from None
        todo = [(s, p) for s, p in items if s in lacking]
        total = sum(p.stat().st_size for _, p in todo)
        done_before = [0]

        def on_progress(_sha: str, sent: int, size: int) -> None:
            if progress:
                progress(done_before[0] + sent, total)

        async def fresh():
            # the transfer's own connection (it closes it when done), beside the shared one;
            # a device that cannot be reached now is retried by the transfer until
            # give_up_after passes with no progress (a refusal is no link error: it stops)
            try:
                return await connect(self.dev, self.links.fleet.connect_timeout)
            except Unreachable as e:
                raise ConnectionError(e.reason) from None

        stats = []
        for sha, path in todo:
            try:
                got = await transfer.put_objects(
                    fresh,
                    self.dev.root,
                    [(sha, path)],
                    give_up_after=self.give_up_after,
                    compress=compress,
                    progress=on_progress,
                )
            except transfer.Unreachable as e:
                raise Unreachable(self.dev.name, f"the transfer gave up: {e}") from None
            except transfer.TransferError as e:
                raise DeviceError(self.dev.name, f"the transfer failed: {e}") from None
            stats.extend(got)
            done_before[0] += path.stat().st_size
        return {
            "objects": len(items),
            "sent_objects": len(todo),
            "raw_bytes": total,
            "wire_bytes": sum(s.wire_bytes_sent for s in stats),
            "chunks_reused": sum(s.chunks_reused for s in stats),
        }

    async def configure(
        self,
        runtime: list[str] | str,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        server_env: dict[str, str] | None = None,
        version: str | None = None,
    ) -> None:
        """How the device's supervisor starts the server of `version` (kept with that
        version, so a rollback or a restart runs each version with its own runtime): the
        process runtime's command from its extracted layers (`runtime`: their shas, the
        dependencies first, the console last), or (docker) the given argv. Prediction logs
        go to {logs}/predlog, where `fleet` pulls them from."""
        if argv is None:
            shas = [runtime] if isinstance(runtime, str) else list(runtime)
            argv = layers.server_command(
                "{runtime}",
                "{bundle}",
                self.dev.serve_port,
                "{logs}/predlog",
                "{digest}",
                self.dev.python,
            )
            # the agent puts layer i's folder for {runtime.i}; the last (console) goes first
            env = layers.server_env(*(f"{{runtime.{i}}}" for i in reversed(range(len(shas)))))
            runtime = shas
        doc = {
            "argv": argv,
            "env": {**(env or {}), **(server_env or {})},
            "port": self.dev.serve_port,
            "runtime": runtime,
        }
        if version:
            doc["version"] = version
        await self.agent("configure", input=json.dumps(doc))

    async def docker_runtime(
        self, progress=None, env_names: tuple[str, ...] = ()
    ) -> tuple[list[tuple[str, Path]], Any]:
        """(objects to send, a step to run after) for a docker device: the edge image's
        layers the device's engine lacks, as one delta tar, loaded once it has arrived.
        The step returns the serve argv (`env_names`: the serve config's variables the
        container is given)."""
        from mlops_edge_ssh import docker_runtime as dr

        image = await asyncio.to_thread(dr.edge_image, self.platform())
        docker = dr.device_docker(self.dev.root)
        conn = await self.links.get(self.dev)
        try:
            present = await dr.device_layers(conn, docker)
        except LOST as e:
            self.links.drop(self.dev)
            raise Unreachable(self.dev.name, f"the link dropped ({e}).") from None
        except dr.DockerRuntimeError as e:
            raise DeviceError(self.dev.name, str(e)) from None
        argv = dr.serve_argv(image, self.dev.serve_port, docker, env_names)
        if image.chain_ids[-1] in present:

            async def nothing() -> list[str]:
                return argv

            return [], nothing
        path, sha, _size = await asyncio.to_thread(dr.delta_tar, image, present)

        async def load() -> list[str]:
            conn = await self.links.get(self.dev)
            try:
                await dr.load_delta(conn, f"{self.dev.root}/objects/{sha}", docker, image)
            except dr.DockerRuntimeError as e:
                raise DeviceError(self.dev.name, str(e)) from None
            return argv

        return [(sha, path)], load

    async def install(self, target: Target, runtime: list[str] | str) -> dict[str, Any]:
        """Install `target` with the runtime layers it runs from (their shas, or "")."""
        shas = [runtime] if isinstance(runtime, str) else runtime
        return await self.agent(
            "install", target.id, target.model, str(target.version), target.digest, *shas
        )

    async def switch(self, vid: str, timeout: float = 60) -> dict[str, Any]:
        return await self.agent("switch", vid, str(timeout), timeout=timeout + 30)

    async def rollback(self, timeout: float = 60) -> dict[str, Any]:
        return await self.agent("rollback", str(timeout), timeout=timeout + 30)

    async def logs(self, lines: int = 100) -> str:
        return str((await self.agent("logs", str(lines))).get("log", ""))

    async def gc(self) -> dict[str, Any]:
        return await self.agent("gc", str(self.dev.keep))

    @contextlib.asynccontextmanager
    async def forward(self) -> AsyncIterator[str]:
        """A local URL reaching the server on the device's loopback, through SSH."""
        conn = await self.links.get(self.dev)
        try:
            listener = await conn.forward_local_port(
                "127.0.0.1", 0, "127.0.0.1", self.dev.serve_port
            )
        except LOST as e:
            self.links.drop(self.dev)
            raise Unreachable(self.dev.name, f"the link dropped ({e}).") from None
        try:
            yield f"http://127.0.0.1:{listener.get_port()}"
        finally:
            listener.close()

    async def gate(self, golden: Golden, version: int, settings: GateSettings) -> GateResult:
        """Gate the server just switched to. A gate that failed because the SSH link
        carrying it dropped is no verdict on the model: it is run once more over a new
        connection, and a device that cannot be reached again is Unreachable."""
        for attempt in (1, 2):
            conn = await self.links.get(self.dev)
            async with self.forward() as url:
                result = await run_gate(url, golden, version, settings)
            if result.passed:
                return result
            lost = conn.is_closed()
            if not lost:
                try:  # a link that died quietly: the keepalive has not noticed yet
                    await asyncio.wait_for(conn.run("true", check=False), KEEPALIVE_WAIT)
                except (*LOST, asyncssh.Error):
                    lost = True
            if not lost:
                break
            self.links.drop(self.dev)
            if attempt == 2:
                raise Unreachable(
                    self.dev.name, f"the link dropped during the gate twice ({result.reason})."
                )
            await self.probe()  # Unreachable when the device cannot be reached again
        with contextlib.suppress(DeviceError):
            result.detail["server_log"] = await self.logs(60)
        return result

    async def telemetry(self) -> dict[str, Any]:
        """Health, version, RSS, requests, errors and p99 as the device reports them now."""
        import httpx

        info = await self.probe()
        out: dict[str, Any] = {
            "current": info.get("current"),
            "previous": info.get("previous"),
            "server_alive": bool((info.get("server") or {}).get("alive")),
            "rss": info.get("server_rss"),
            "restarts": (info.get("server") or {}).get("restarts"),
            "clock_skew_s": round(float(info.get("time", time.time())) - time.time(), 3),
            "disk_free": info.get("disk_free"),
            "mem_available": info.get("mem_available"),
            "health": "down",
        }
        if not out["server_alive"]:
            return out
        try:
            async with self.forward() as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
                h = await client.get("/health")
                out["health"] = "ok" if h.status_code == 200 else f"unhealthy ({h.status_code})"
                m = await client.get("/metrics")
                if m.status_code == 200:
                    out.update(parse_metrics(m.text))
        except (TimeoutError, httpx.HTTPError, OSError) as e:
            out["health"] = f"no answer ({type(e).__name__})"
        return out
