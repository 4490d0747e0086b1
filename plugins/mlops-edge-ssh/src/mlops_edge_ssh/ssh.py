"""Reaching a device: one verified SSH connection per device, reused, with keepalives.

Host keys are always verified against the inventory's known_hosts (a file, or one
`known_host` line). asyncssh is told not to read ~/.ssh/config or an agent: what reaches
a device is what fleet.toml says. A dead link is noticed within 15 s (keepalive every
5 s, 3 missed), and errors are sorted into *unreachable* (the network: refused, timed
out, cut) and *refused* (the device answered but would not be trusted or let us in),
because a rollout counts them apart.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from typing import Any

import asyncssh

from mlops_console.errors import MlopsError
from mlops_edge_ssh.inventory import Device, Fleet

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


class DeviceError(MlopsError):
    """A device could not do what was asked. `kind` is 'unreachable' or 'failed'."""

    kind = "failed"

    def __init__(self, device: str, message: str):
        super().__init__(f"{device}: {message}")
        self.device = device
        self.reason = message


class Unreachable(DeviceError):
    kind = "unreachable"


class HostKeyRefused(DeviceError):
    kind = "failed"


class AuthRefused(DeviceError):
    kind = "failed"


def _known_hosts(dev: Device) -> Any:
    if dev.known_host:
        host = dev.host if dev.port == 22 else f"[{dev.host}]:{dev.port}"
        return asyncssh.import_known_hosts(f"{host} {dev.known_host.strip()}\n")
    assert dev.known_hosts is not None  # the inventory refuses a device with neither
    if not dev.known_hosts.exists():
        raise HostKeyRefused(
            dev.name,
            f"the known_hosts file {dev.known_hosts} does not exist; host keys are always "
            "verified. Create it with each device's line, checked against the key on the device.",
        )
    return str(dev.known_hosts)


async def _offered_fingerprint(dev: Device, timeout: float) -> str:
    """The SHA256 fingerprint of the host key `dev` offers now (never trusted: only shown)."""
    try:
        # config=None: like connect, read no ~/.ssh/config (get_server_host_key verifies
        # nothing, so it takes no known_hosts argument)
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(dev.host, dev.port, config=None), timeout
        )
    except Exception as e:  # only the message is at stake: say why it is missing
        return f"(fingerprint unavailable: {_say(e)})"
    return key.get_fingerprint("sha256") if key is not None else "(no host key offered)"


def _has_line(dev: Device) -> bool:
    """Whether the known_hosts file has a line for `dev` (of any key)."""
    if dev.known_host:
        return True
    try:
        found = asyncssh.read_known_hosts(str(dev.known_hosts)).match(dev.host, dev.host, dev.port)
    except (OSError, ValueError):
        return True  # unreadable: do not claim it has no line
    return any(found[:3])


def _host_key_advice(dev: Device) -> str:
    if dev.known_host:
        return f"then update `known_host` of {dev.name} in fleet.toml to the device's key line"
    if _has_line(dev):
        return f"then replace its line in {dev.known_hosts}"
    return f"then add its line to {dev.known_hosts} (`ssh-keyscan -p {dev.port} {dev.host}`)"


async def connect(dev: Device, timeout: float = 15.0) -> asyncssh.SSHClientConnection:
    """A verified connection to `dev`, or DeviceError saying what stood in the way."""
    opts: dict[str, Any] = dict(
        port=dev.port,
        username=dev.user,
        known_hosts=_known_hosts(dev),
        client_keys=[str(dev.key)] if dev.key else None,
        agent_path=None,
        config=None,
        connect_timeout=timeout,
        login_timeout=timeout,
        keepalive_interval=KEEPALIVE_INTERVAL,
        keepalive_count_max=KEEPALIVE_COUNT,
    )
    if dev.key and not dev.key.exists():
        raise AuthRefused(
            dev.name, f"the key file {dev.key} does not exist; fix `key` in fleet.toml."
        )
    try:
        return await asyncssh.connect(dev.host, **opts)
    except asyncssh.HostKeyNotVerifiable:
        fp = await _offered_fingerprint(dev, timeout)
        src = "known_host in fleet.toml" if dev.known_host else str(dev.known_hosts)
        raise HostKeyRefused(
            dev.name,
            f"{dev.address} offered host key {fp}, which {src} does not vouch for ("
            + ("changed" if _has_line(dev) else "no line for this host")
            + "); nothing was sent. If the device was reinstalled or is new, compare that "
            "fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the "
            f"device itself, {_host_key_advice(dev)}; otherwise treat it as an attack.",
        ) from None
    except asyncssh.PermissionDenied:
        if dev.key is None:
            raise AuthRefused(
                dev.name,
                f"{dev.user}@{dev.address} wants a key and none is configured for {dev.name}: "
                'set key = "keys/fleet_ed25519" in [defaults] of fleet.toml (or `mlops fleet '
                "add NAME --host HOST --key FILE`) and add its public key to the device's "
                "authorized_keys.",
            ) from None
        raise AuthRefused(
            dev.name,
            f"{dev.user}@{dev.address} refused the key {dev.key}; add its public key to the "
            "device's authorized_keys.",
        ) from None
    except (TimeoutError, OSError, asyncssh.Error) as e:
        raise Unreachable(dev.name, f"{dev.address} cannot be reached ({_say(e)}).") from None


def _say(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _short(argv: list[str], width: int = 60) -> str:
    cmd = " ".join(argv)
    return cmd if len(cmd) <= width else cmd[: width - 3] + "..."


LOST = (
    OSError,
    asyncio.TimeoutError,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    BrokenPipeError,
)


def quiet_lost_links(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An event-loop exception handler: the writes asyncssh pipelines for an SFTP transfer
    end with "Task exception was never retrieved" when their link drops; the transfer
    has seen the cut and retries, so that is no traceback for the engineer."""
    exc = context.get("exception")
    lost = isinstance(exc, asyncssh.Error | OSError | asyncio.TimeoutError)
    if lost and "never retrieved" in str(context.get("message", "")):
        return
    loop.default_exception_handler(context)


@dataclass
class Output:
    exit_status: int
    stdout: str
    stderr: str


class Links:
    """One connection per device, reused; bounded logins per fleet and per link."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.parallel = asyncio.Semaphore(fleet.parallel)
        self._per_link: dict[str, asyncio.Semaphore] = {}

    def link_slot(self, dev: Device) -> asyncio.Semaphore:
        key = dev.link or dev.host
        if key not in self._per_link:
            self._per_link[key] = asyncio.Semaphore(self.fleet.per_link)
        return self._per_link[key]

    async def get(self, dev: Device, fresh: bool = False) -> asyncssh.SSHClientConnection:
        lock = self._locks.setdefault(dev.name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(dev.name)
            if conn is not None and not fresh and not conn.is_closed():
                return conn
            if conn is not None:
                conn.abort()
            conn = await connect(dev, self.fleet.connect_timeout)
            self._conns[dev.name] = conn
            return conn

    def drop(self, dev: Device) -> None:
        conn = self._conns.pop(dev.name, None)
        if conn is not None:
            conn.abort()

    async def run(
        self, dev: Device, argv: list[str], *, input: str | None = None, timeout: float = 120
    ) -> Output:
        """Run a command on `dev` (argv, quoted here); Unreachable when the link fails."""
        conn = await self.get(dev)
        cmd = " ".join(shlex.quote(a) for a in argv)
        try:
            res = await asyncio.wait_for(conn.run(cmd, input=input, check=False), timeout)
        except LOST as e:
            self.drop(dev)
            raise Unreachable(dev.name, f"the link dropped ({_say(e)}).") from None
        if res.exit_status is None or conn.is_closed():
            # asyncssh returns (no exit status, no output) instead of raising when the
            # channel or the connection closes mid-command: that is the link, not the device
            self.drop(dev)
            raise Unreachable(
                dev.name, f"the link dropped during `{_short(argv)}` (no exit status came back)."
            )
        return Output(
            int(res.exit_status),
            str(res.stdout or ""),
            str(res.stderr or ""),
        )

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        for conn in list(self._conns.values()):
            try:
                await asyncio.wait_for(conn.wait_closed(), 2)
            except (TimeoutError, OSError):
                pass
        self._conns.clear()
