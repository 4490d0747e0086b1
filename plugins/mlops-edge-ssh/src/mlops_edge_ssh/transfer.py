"""Content-addressed objects sent to an edge device over bad links.

The device keeps objects at ``<root>/objects/<sha256>`` (files 0600, dirs 0700). The
controller sends a local file whose sha256 it knows:

* the RAW file is cut into chunks of ``chunk_size`` bytes; each chunk is compressed on its
  own with zstd (level 3) when ``compress=True`` (concatenated zstd frames decode as one
  stream) and the manifest records index, raw sha256, wire sha256 and wire size;
* chunk *i* is written over SFTP (pipelined writes) to ``<i>.<token>.part`` in the staging
  dir ``<root>/objects/.incoming/<sha256>/`` and then renamed (posix-rename) to
  ``<i>.<wire-sha256[:16]>.zst`` (``.raw`` uncompressed). Only a final-named chunk whose
  size matches and whose wire sha256 (one batched remote ``sha256sum``) matches counts on a
  resume; a ``.part`` never does (pipelined writes leave holes, so its size means nothing);
* the device assembles the object with shell tools only (``zstd -dc``/``cat`` into a
  temporary file, ``sha256sum``, ``chmod 600``, ``sync``, ``mv -f``: an atomic rename on the
  same filesystem) and removes the staging dir. A hash mismatch removes the temporary file
  and the chunks and raises :class:`TransferError`.

:func:`put_objects` reconnects (backoff 0.5 s doubling to 5 s) and resumes after any
disconnect until ``give_up_after`` seconds pass without progress, then raises
:class:`Unreachable`. A link cut costs at most the chunk that was in flight.

Every remote command runs under ``sh -c`` (whatever the login shell is) with every path
quoted by :func:`shlex.quote`; roots may contain spaces. A relative root is relative to the
login directory (SFTP and the shell agree on it); ``~`` is not expanded.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkInfo",
    "Manifest",
    "TransferError",
    "TransferStats",
    "Unreachable",
    "build_manifest",
    "device_has_zstd",
    "is_link_error",
    "missing_objects",
    "put_object",
    "put_objects",
]

DEFAULT_CHUNK_SIZE = 1 << 20
ZSTD_LEVEL = 3
#: slowest link the per-chunk write timeout allows for (bytes/second)
SLOW_LINK_BPS = 8 * 1024
#: slowest device hashing speed the remote command timeouts allow for (bytes/second)
SLOW_DEVICE_BPS = 4 * 1024 * 1024
BACKOFF_START = 0.5
BACKOFF_MAX = 5.0

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA_LINE_RE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")

Progress = Callable[[int, int], None]
FleetProgress = Callable[[str, int, int], None]
Connect = Callable[[], Awaitable[asyncssh.SSHClientConnection]]


class TransferError(Exception):
    """An object could not be put on a device (and retrying the same way will not help)."""


class Unreachable(TransferError):
    """The device stayed unreachable (no progress) for longer than ``give_up_after``."""


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk of the raw file as it travels."""

    index: int
    offset: int
    raw_size: int
    raw_sha256: str
    wire_sha256: str
    wire_size: int
    compressed: bool

    @property
    def name(self) -> str:
        """The chunk's final name in the staging dir."""
        return f"{self.index}.{self.wire_sha256[:16]}.{'zst' if self.compressed else 'raw'}"


@dataclass(frozen=True)
class Manifest:
    """The per-chunk manifest of one local file."""

    sha256: str
    raw_size: int
    chunk_size: int
    compress: bool
    chunks: tuple[ChunkInfo, ...]

    @property
    def wire_size(self) -> int:
        """Wire bytes needed to send the whole object from scratch."""
        return sum(c.wire_size for c in self.chunks)


@dataclass
class TransferStats:
    """What putting one object cost (aggregated over reconnects by :func:`put_objects`).

    ``wire_bytes_sent`` counts the payload of every chunk whose write was started, so a
    chunk cut off mid-write counts in full (an upper bound of what crossed the link).
    ``chunks_sent`` counts chunk writes that completed (a chunk re-sent counts again),
    ``chunks_reused`` chunks found intact on the device when an attempt started.
    """

    sha256: str
    raw_size: int = 0
    wire_bytes_sent: int = 0
    chunks_total: int = 0
    chunks_sent: int = 0
    chunks_reused: int = 0
    skipped: bool = False
    seconds: float = 0.0
    #: wire bytes of the whole object (what a transfer from scratch needs)
    wire_size: int = 0
    #: connections used for this object
    attempts: int = 0
    _started: float = field(default_factory=time.monotonic, repr=False, compare=False)


# --------------------------------------------------------------------------- helpers


def _check_sha(sha: str) -> str:
    sha = sha.strip().lower()
    if not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def _paths(root: str, sha: str) -> tuple[str, str, str, str]:
    """objects dir, object path, incoming dir, staging dir (remote, unquoted)."""
    root = root.rstrip("/") or "/"
    objects = f"{root}/objects" if root != "/" else "/objects"
    incoming = f"{objects}/.incoming"
    return objects, f"{objects}/{sha}", incoming, f"{incoming}/{sha}"


def is_link_error(exc: BaseException, conn: asyncssh.SSHClientConnection | None = None) -> bool:
    """Whether ``exc`` means the link (not the request) failed, so reconnecting may help."""
    if isinstance(exc, asyncssh.PermissionDenied | asyncssh.HostKeyNotVerifiable):
        return False
    if isinstance(exc, asyncssh.SFTPNoConnection | asyncssh.SFTPConnectionLost):
        return True
    if isinstance(exc, asyncssh.SFTPError):
        # an SFTP failure on a channel that died with the connection
        return conn is not None and conn.is_closed()
    if isinstance(exc, TransferError):
        return False
    return isinstance(
        exc,
        asyncssh.DisconnectError
        | asyncssh.ChannelOpenError
        | OSError
        | EOFError
        | asyncio.TimeoutError
        | asyncio.IncompleteReadError,
    )


async def _run(
    conn: asyncssh.SSHClientConnection,
    script: str,
    *,
    stdin: str | None = None,
    timeout: float = 60.0,
) -> asyncssh.SSHCompletedProcess:
    """Run ``script`` under ``sh -c`` on the device; a vanished exit status is a lost link."""
    cmd = "sh -c " + shlex.quote(script)
    if stdin:
        run = conn.run(cmd, input=stdin, check=False)
    else:  # asyncssh leaves stdin open for an empty input; the script would wait on it
        run = conn.run(cmd, stdin=asyncssh.DEVNULL, check=False)
    result = await asyncio.wait_for(run, timeout)
    if result.exit_signal is None and result.exit_status in (None, -1):
        raise asyncssh.ConnectionLost("remote command ended without an exit status")
    return result


def _out(result: asyncssh.SSHCompletedProcess) -> str:
    out = result.stdout
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def _err(result: asyncssh.SSHCompletedProcess) -> str:
    err = result.stderr
    text = err.decode(errors="replace") if isinstance(err, bytes) else (err or "")
    return text.strip()[-2000:]


def _hash_timeout(nbytes: int) -> float:
    return max(60.0, nbytes / SLOW_DEVICE_BPS)


def _chunk_timeout(wire_size: int) -> float:
    return max(30.0, wire_size / SLOW_LINK_BPS)


# --------------------------------------------------------------------------- local side


def build_manifest(
    source: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE, compress: bool = True
) -> Manifest:
    """Hash (and, with ``compress``, compress) ``source`` chunk by chunk. Blocking: run it in
    a thread. The compressed bytes are not kept here; they are recomputed (deterministically)
    when a chunk is sent, and kept for the other devices of a rollout (`_read_wire`)."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    whole = hashlib.sha256()
    chunks: list[ChunkInfo] = []
    cctx = _compressor() if compress else None
    offset = 0
    with open(source, "rb") as f:
        while raw := f.read(chunk_size):
            whole.update(raw)
            wire = cctx.compress(raw) if cctx is not None else raw
            chunks.append(
                ChunkInfo(
                    index=len(chunks),
                    offset=offset,
                    raw_size=len(raw),
                    raw_sha256=hashlib.sha256(raw).hexdigest(),
                    wire_sha256=hashlib.sha256(wire).hexdigest(),
                    wire_size=len(wire),
                    compressed=compress,
                )
            )
            offset += len(raw)
    return Manifest(whole.hexdigest(), offset, chunk_size, compress, tuple(chunks))


# A rollout sends the same objects to every device. Their manifests and compressed chunks
# are a function of the object's sha256 (content-addressed) and are computed once per
# process, not once per device: hashing and compressing a 129 MB runtime layer took ~2 s
# of the controller's CPU per device, and re-compressing it to send it as much again.
_MANIFESTS: OrderedDict[tuple[str, int, bool], Manifest] = OrderedDict()
_MANIFEST_LOCKS: dict[tuple[str, int, bool], threading.Lock] = {}
_WIRE: dict[str, bytes] = {}  # a chunk's wire sha256 -> its wire bytes
_WIRE_LOCKS: dict[str, threading.Lock] = {}
_wire_bytes = 0
_CACHE_LOCK = threading.Lock()
MANIFESTS_KEPT = 256
WIRE_BYTES_KEPT = 64 * 1024 * 1024  # the 41 MB of a runtime layer's chunks fit


def forget_wire() -> None:
    """Drop the compressed chunks kept (a rollout's end: a daemon does not hold them)."""
    global _wire_bytes
    with _CACHE_LOCK:
        _WIRE.clear()
        _WIRE_LOCKS.clear()
        _wire_bytes = 0


def _once(key: Any, cache: dict, locks: dict, make: Callable[[], Any], keep: Callable[[Any], None]):
    """`cache[key]`, else `make()` once however many threads ask at once (they wait on the
    key's lock); `keep(value)` (under _CACHE_LOCK) decides what is remembered. A failed
    `make` remembers nothing, not even its lock."""
    with _CACHE_LOCK:
        hit = cache.get(key)
        if hit is not None:
            return hit
        lock = locks.setdefault(key, threading.Lock())
    with lock:
        with _CACHE_LOCK:
            hit = cache.get(key)
        if hit is not None:
            return hit
        try:
            value = make()
        except BaseException:
            with _CACHE_LOCK:
                locks.pop(key, None)
            raise
        with _CACHE_LOCK:
            keep(value)
        return value


def manifest_for(
    source: Path, sha: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, compress: bool = True
) -> Manifest:
    """`build_manifest` of `source`, checked to hash to `sha`, computed once per process
    for each (sha, chunk_size, compress); devices asking at once wait for one build.
    Blocking: run it in a thread."""
    key = (sha, chunk_size, compress)

    def make() -> Manifest:
        manifest = build_manifest(source, chunk_size=chunk_size, compress=compress)
        _check_manifest(manifest, sha, source)  # a wrong file is never remembered
        return manifest

    def keep(manifest: Manifest) -> None:
        _MANIFESTS[key] = manifest
        while len(_MANIFESTS) > MANIFESTS_KEPT:
            old, _ = _MANIFESTS.popitem(last=False)
            _MANIFEST_LOCKS.pop(old, None)

    return _once(key, _MANIFESTS, _MANIFEST_LOCKS, make, keep)


def _compressor() -> Any:
    import zstandard  # the controller only; the device decodes with the zstd CLI

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL)


def _read_wire(source: Path, chunk: ChunkInfo, keep: bool = False) -> bytes:
    """The chunk's wire bytes, checked against the manifest (the file may have changed).
    With `keep`, a compressed chunk is kept, by its wire sha256, for the next device (until
    WIRE_BYTES_KEPT are kept: then no more, so the devices that follow in the same order
    still find the first ones); devices asking at once wait for one compression."""
    if not (keep and chunk.compressed):
        return _make_wire(source, chunk)
    key = chunk.wire_sha256

    def remember(wire: bytes) -> None:
        global _wire_bytes
        if key not in _WIRE and _wire_bytes + len(wire) <= WIRE_BYTES_KEPT:
            _WIRE[key] = wire
            _wire_bytes += len(wire)

    return _once(key, _WIRE, _WIRE_LOCKS, lambda: _make_wire(source, chunk), remember)


def _make_wire(source: Path, chunk: ChunkInfo) -> bytes:
    with open(source, "rb") as f:
        f.seek(chunk.offset)
        raw = f.read(chunk.raw_size)
    if len(raw) != chunk.raw_size or hashlib.sha256(raw).hexdigest() != chunk.raw_sha256:
        raise TransferError(f"{source} changed during the transfer (chunk {chunk.index})")
    wire = _compressor().compress(raw) if chunk.compressed else raw
    if hashlib.sha256(wire).hexdigest() != chunk.wire_sha256:
        raise TransferError(f"chunk {chunk.index} of {source} compressed differently than before")
    return wire


# --------------------------------------------------------------------------- device side


async def device_has_zstd(conn: asyncssh.SSHClientConnection) -> bool:
    """Whether the device has a working ``zstd`` CLI (needed for ``compress=True``)."""
    result = await _run(conn, "command -v zstd >/dev/null 2>&1 && zstd -V >/dev/null 2>&1")
    return result.exit_status == 0


async def _remote_sizes(
    conn: asyncssh.SSHClientConnection, root: str, shas: Iterable[str]
) -> dict[str, int]:
    """One remote command: the size of each object the device has."""
    wanted = sorted({_check_sha(s) for s in shas})
    if not wanted:
        return {}
    objects = _paths(root, wanted[0])[0]
    script = f"""
cd -- {shlex.quote(objects)} 2>/dev/null || exit 0
set --
while read -r s; do [ -f "$s" ] && set -- "$@" "$s"; done
[ "$#" -gt 0 ] || exit 0
stat -c '%s %n' -- "$@"
exit 0
"""
    result = await _run(conn, script, stdin="\n".join(wanted) + "\n")
    if result.exit_status != 0:
        raise TransferError(f"listing objects under {root!r} failed: {_err(result)}")
    sizes: dict[str, int] = {}
    for line in _out(result).splitlines():
        size, _, name = line.partition(" ")
        if name in wanted and size.isdigit():
            sizes[name] = int(size)
    return sizes


async def missing_objects(
    conn: asyncssh.SSHClientConnection, root: str, shas: Iterable[str]
) -> set[str]:
    """The objects (of ``shas``) the device lacks, found with one remote command."""
    wanted = {_check_sha(s) for s in shas}
    present = await _remote_sizes(conn, root, wanted)
    return wanted - present.keys()


async def _prepare(
    conn: asyncssh.SSHClientConnection,
    root: str,
    manifest: Manifest,
    *,
    verify_existing: bool,
) -> tuple[bool, set[int]]:
    """One remote command: is the object there already (right size, and hash if asked)?
    Else create the staging dir, drop stale ``.part`` files and report which final-named
    chunks are intact (size and wire sha256). Returns (present, intact chunk indexes)."""
    sha = manifest.sha256
    _, obj, _, stg = _paths(root, sha)
    script = f"""
umask 077
obj={shlex.quote(obj)}
stg={shlex.quote(stg)}
if [ -f "$obj" ]; then
  size=$(stat -c %s -- "$obj") || size=-1
  if [ "$size" = {manifest.raw_size} ]; then
    if [ {int(verify_existing)} = 0 ]; then echo PRESENT; exit 0; fi
    h=$(sha256sum < "$obj") && [ "${{h%% *}}" = {sha} ] && {{ echo PRESENT; exit 0; }}
  fi
  echo "BADOBJ $size"
fi
mkdir -p -- "$stg" || exit 20
cd -- "$stg" || exit 21
rm -f -- *.part
set --
while read -r f; do [ -f "$f" ] && set -- "$@" "$f"; done
if [ "$#" -gt 0 ]; then
  stat -c 'SIZE %s %n' -- "$@"
  sha256sum -- "$@"
fi
echo READY
"""
    names = "".join(c.name + "\n" for c in manifest.chunks)
    result = await _run(conn, script, stdin=names, timeout=_hash_timeout(manifest.raw_size))
    out = _out(result)
    lines = out.splitlines()
    if "PRESENT" in lines:
        return True, set()
    if result.exit_status != 0 or "READY" not in lines:
        raise TransferError(f"preparing {stg!r} failed (exit {result.exit_status}): {_err(result)}")
    sizes: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for line in lines:
        if line.startswith("SIZE "):
            _, size, name = line.split(" ", 2)
            sizes[name] = int(size)
        elif m := _SHA_LINE_RE.match(line):
            hashes[m.group(2)] = m.group(1)
    intact = {
        c.index
        for c in manifest.chunks
        if sizes.get(c.name) == c.wire_size and hashes.get(c.name) == c.wire_sha256
    }
    return False, intact


async def _send_chunk(
    sftp: asyncssh.SFTPClient, stg: str, chunk: ChunkInfo, wire: bytes, token: str
) -> None:
    """Write one chunk to a ``.part`` file (pipelined writes), then rename it final."""
    part = f"{stg}/{chunk.index}.{token}.part"
    final = f"{stg}/{chunk.name}"

    async def write() -> None:
        async with sftp.open(part, "wb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
            await f.write(wire, 0)
        try:
            await sftp.posix_rename(part, final)
        except asyncssh.SFTPOpUnsupported:
            if await sftp.exists(final):
                await sftp.remove(final)
            await sftp.rename(part, final)

    await asyncio.wait_for(write(), _chunk_timeout(len(wire)))


async def _assemble(conn: asyncssh.SSHClientConnection, root: str, manifest: Manifest) -> None:
    """Decode the chunks into a temporary file, check its sha256, rename it into place."""
    sha = manifest.sha256
    _, obj, inc, stg = _paths(root, sha)
    token = secrets.token_hex(4)
    tmp = f"{inc}/{sha}.tmp.{token}"
    listing = f".list.{token}"
    if not manifest.chunks:
        build = ': > "$tmp"'
    elif manifest.compress:
        build = 'while IFS= read -r f; do cat -- "$f"; done < "$list" | zstd -dcq > "$tmp"'
    else:
        build = 'while IFS= read -r f; do cat -- "$f"; done < "$list" > "$tmp"'
    script = f"""
umask 077
obj={shlex.quote(obj)}
inc={shlex.quote(inc)}
stg={shlex.quote(stg)}
tmp={shlex.quote(tmp)}
list={shlex.quote(listing)}
cd -- "$stg" || {{ echo NOSTAGE; exit 0; }}
cat > "$list"
while IFS= read -r f; do [ -f "$f" ] || {{ echo "MISSING $f"; exit 0; }}; done < "$list"
{build}
rc=$?
h=$(sha256sum < "$tmp" 2>/dev/null) || h=none
h=${{h%% *}}
if [ "$h" != {sha} ]; then
  rm -f -- "$tmp"
  if [ -f "$obj" ]; then
    o=$(sha256sum < "$obj" 2>/dev/null) || o=none
    if [ "${{o%% *}}" = {sha} ]; then cd /; rm -rf -- "$stg"; echo DONE; exit 0; fi
  fi
  if [ "$rc" != 0 ]; then rm -f -- "$list"; echo "FAILED $rc"; exit 0; fi
  cd /; rm -rf -- "$stg"
  echo "MISMATCH $h"
  exit 0
fi
chmod 600 -- "$tmp" || exit 30
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$obj" || {{ rm -f -- "$tmp"; exit 31; }}
cd /
rm -rf -- "$stg"
rm -f -- "$inc/{sha}".tmp.*
echo DONE
"""
    names = "".join(c.name + "\n" for c in manifest.chunks)
    result = await _run(conn, script, stdin=names, timeout=2 * _hash_timeout(manifest.raw_size))
    lines = _out(result).splitlines()
    if result.exit_status == 0 and "DONE" in lines:
        return
    status = next((ln for ln in lines if ln.split(" ", 1)[0] in _STATUSES), "")
    word = status.split(" ", 1)[0]
    if word == "MISMATCH":
        raise TransferError(
            f"object {sha} assembled on the device hashes to {status[9:]}; its chunks were removed"
        )
    if word == "FAILED":
        raise TransferError(
            f"assembling object {sha} on the device failed ({status}): {_err(result)}"
        )
    if word in ("MISSING", "NOSTAGE"):
        raise TransferError(f"object {sha}: staging vanished during assembly ({status})")
    raise TransferError(
        f"assembling object {sha} failed (exit {result.exit_status}): {_err(result)}"
    )


_STATUSES = {"MISMATCH", "FAILED", "MISSING", "NOSTAGE"}


# --------------------------------------------------------------------------- transfer


async def _put(
    conn: asyncssh.SSHClientConnection,
    sftp: asyncssh.SFTPClient,
    root: str,
    source: Path,
    manifest: Manifest,
    stats: TransferStats,
    *,
    verify_existing: bool,
    progress: Progress | None,
    on_advance: Callable[[], None] | None,
) -> None:
    """One attempt; mutates ``stats`` as it goes so a cut loses nothing of the count."""
    stats.attempts += 1
    stats.raw_size = manifest.raw_size
    stats.chunks_total = len(manifest.chunks)
    stats.wire_size = manifest.wire_size
    present, intact = await _prepare(conn, root, manifest, verify_existing=verify_existing)
    if present:
        stats.skipped = stats.wire_bytes_sent == 0 and stats.chunks_sent == 0
        return
    stats.chunks_reused += len(intact)
    done = sum(c.raw_size for c in manifest.chunks if c.index in intact)
    if progress and done:
        progress(done, manifest.raw_size)
    stg = _paths(root, manifest.sha256)[3]
    token = secrets.token_hex(4)
    todo = [c for c in manifest.chunks if c.index not in intact]
    pending: asyncio.Future[bytes] | None = None
    try:
        for n, chunk in enumerate(todo):
            if pending is None:
                pending = asyncio.ensure_future(asyncio.to_thread(_read_wire, source, chunk, True))
            wire = await pending
            pending = None
            if n + 1 < len(todo):  # read and compress the next chunk while this one travels
                pending = asyncio.ensure_future(
                    asyncio.to_thread(_read_wire, source, todo[n + 1], True)
                )
            stats.wire_bytes_sent += len(wire)
            await _send_chunk(sftp, stg, chunk, wire, token)
            stats.chunks_sent += 1
            done += chunk.raw_size
            if on_advance:
                on_advance()
            if progress:
                progress(done, manifest.raw_size)
    finally:
        if pending is not None:
            pending.cancel()
            # the thread runs to its end anyway; collect its outcome so nothing is left
            await asyncio.gather(pending, return_exceptions=True)
    await _assemble(conn, root, manifest)
    if on_advance:
        on_advance()


async def put_object(
    conn: asyncssh.SSHClientConnection,
    root: str,
    sha256: str,
    source: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compress: bool = True,
    progress: Progress | None = None,
    sftp: asyncssh.SFTPClient | None = None,
    verify_existing: bool = False,
) -> TransferStats:
    """Put ``source`` on the device as ``<root>/objects/<sha256>``, resuming from whatever
    intact chunks an earlier, cut-off attempt left. ``progress(done_raw, total_raw)`` is
    called as chunks complete. A disconnect propagates as asyncssh's/OSError's exception
    (see :func:`is_link_error`); :func:`put_objects` reconnects by itself."""
    sha = _check_sha(sha256)
    source = Path(source)
    stats = TransferStats(sha256=sha)
    if not verify_existing:
        # one round trip spares hashing and compressing a large file the device already has
        size = os.stat(source).st_size
        if (await _remote_sizes(conn, root, [sha])).get(sha) == size:
            stats.raw_size, stats.skipped, stats.attempts = size, True, 1
            stats.seconds = time.monotonic() - stats._started
            return stats
    manifest = await asyncio.to_thread(
        manifest_for, source, sha, chunk_size=chunk_size, compress=compress
    )
    own = await conn.start_sftp_client() if sftp is None else None
    try:
        await _put(
            conn,
            sftp or own,  # type: ignore[arg-type]
            root,
            source,
            manifest,
            stats,
            verify_existing=verify_existing,
            progress=progress,
            on_advance=None,
        )
    finally:
        if own is not None:
            own.exit()  # no waiting for the channel to close: the link may be dead
    stats.seconds = time.monotonic() - stats._started
    return stats


def _bind(progress: FleetProgress | None, sha: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(sha, done, total)


def _check_manifest(manifest: Manifest, sha: str, source: Path) -> None:
    if manifest.sha256 != sha:
        raise TransferError(
            f"{source} hashes to {manifest.sha256}, not the expected {sha}; nothing sent"
        )


async def put_objects(
    connect: Connect,
    root: str,
    items: list[tuple[str, Path]],
    *,
    give_up_after: float = 600.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compress: bool = True,
    progress: FleetProgress | None = None,
    verify_existing: bool = False,
    connect_timeout: float = 30.0,
) -> list[TransferStats]:
    """Put every ``(sha256, path)`` the device lacks (one remote command finds which), over
    one connection and one SFTP session, reconnecting with backoff (0.5 s doubling to 5 s)
    and resuming after any disconnect until ``give_up_after`` seconds pass without progress
    (then :class:`Unreachable`). ``connect()`` returns a fresh connection (created with
    keepalives, e.g. ``keepalive_interval=5, keepalive_count_max=3``).
    ``progress(sha, done_raw, total_raw)``. Returns one aggregated
    :class:`TransferStats` per distinct sha, in the order of ``items``."""
    order: list[str] = []
    sources: dict[str, Path] = {}
    for sha, path in items:
        sha = _check_sha(sha)
        if sha not in sources:
            order.append(sha)
            sources[sha] = Path(path)
    stats = {sha: TransferStats(sha256=sha) for sha in order}
    for sha in order:
        stats[sha].raw_size = os.stat(sources[sha]).st_size
    manifests: dict[str, Manifest] = {}
    pending = list(order)
    last_advance = time.monotonic()
    delay = BACKOFF_START

    def advanced() -> None:
        nonlocal last_advance, delay
        last_advance = time.monotonic()
        delay = BACKOFF_START

    while pending:
        conn: asyncssh.SSHClientConnection | None = None
        try:
            remaining = give_up_after - (time.monotonic() - last_advance)
            conn = await asyncio.wait_for(connect(), max(0.1, min(connect_timeout, remaining)))
            sftp = await conn.start_sftp_client()
            sizes = await _remote_sizes(conn, root, pending)
            for sha in list(pending):
                st = stats[sha]
                if not verify_existing and sizes.get(sha) == st.raw_size:
                    st.skipped = st.wire_bytes_sent == 0 and st.chunks_sent == 0
                else:
                    manifest = manifests.get(sha)
                    if manifest is None:
                        manifest = await asyncio.to_thread(
                            manifest_for,
                            sources[sha],
                            sha,
                            chunk_size=chunk_size,
                            compress=compress,
                        )
                        manifests[sha] = manifest
                    await _put(
                        conn,
                        sftp,
                        root,
                        sources[sha],
                        manifest,
                        st,
                        verify_existing=verify_existing,
                        progress=_bind(progress, sha),
                        on_advance=advanced,
                    )
                st.seconds = time.monotonic() - st._started
                pending.remove(sha)
                advanced()
        except Exception as exc:
            if not is_link_error(exc, conn):
                raise
            stalled = time.monotonic() - last_advance
            if stalled >= give_up_after:
                raise Unreachable(
                    f"no progress putting {len(pending)} object(s) under {root!r} for "
                    f"{stalled:.0f} s (last error: {type(exc).__name__}: {exc})"
                ) from exc
            await asyncio.sleep(min(delay, max(0.0, give_up_after - stalled)))
            delay = min(delay * 2, BACKOFF_MAX)
        finally:
            if conn is not None:
                conn.abort()
    return [stats[sha] for sha in order]
