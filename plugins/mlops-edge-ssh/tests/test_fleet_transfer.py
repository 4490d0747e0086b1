"""Chunked, resumable, compressed object transfer against a real sshd on 127.0.0.1.

The device is this machine: a plain OpenSSH sshd (root, key auth, internal-sftp) started by
the ``sshd`` fixture below on a free port, so the device's files are checked directly on
the local filesystem. Link cuts are made by killing that sshd and all its sessions, then
starting it again on the same port with the same host key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from mlops_edge_ssh.transfer import (
    TransferError,
    TransferStats,
    Unreachable,
    build_manifest,
    device_has_zstd,
    is_link_error,
    missing_objects,
    put_object,
    put_objects,
)

SSHD = "/usr/sbin/sshd"
MiB = 1 << 20


def _require_sshd() -> None:
    why = None
    if os.geteuid() != 0:
        why = "needs root (sshd with root login)"
    elif not os.path.exists(SSHD):
        why = f"needs {SSHD}"
    elif shutil.which("zstd") is None or shutil.which("sha256sum") is None:
        why = "needs the zstd and sha256sum commands"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    """A throwaway sshd; ``cut()`` kills it with every session, ``start()`` brings it back."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(base / "host_ed25519")
        os.chmod(base / "host_ed25519", 0o600)
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        (base / "authorized_keys").write_bytes(self.client_key.export_public_key())
        (base / "known_hosts").write_bytes(
            f"[127.0.0.1]:{self.port} ".encode() + host_key.export_public_key()
        )
        (base / "sshd_config").write_text(
            f"""HostKey {base / "host_ed25519"}
ListenAddress 127.0.0.1
Port {self.port}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {base / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def start(self) -> None:
        log = open(self.base / "sshd.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")],
            stdout=log,
            stderr=log,
        )
        log.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
            ):
                s.settimeout(0.5)
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise AssertionError(f"sshd did not come up:\n{self.log()}")

    def cut(self) -> None:
        """Kill the listener and every session process: the link is gone."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.base / "sshd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def connect(self) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            self.port,
            username="root",
            client_keys=[self.client_key],
            known_hosts=str(self.base / "known_hosts"),
            keepalive_interval=5,
            keepalive_count_max=3,
            connect_timeout=5,
        )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    _require_sshd()
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    server.wait_ready()
    yield server
    server.cut()


@pytest.fixture
def ensure_sshd(sshd: Sshd) -> Sshd:
    """The module's sshd, started again if a test left it cut."""
    if sshd.proc is None or sshd.proc.poll() is not None:
        sshd.start()
    sshd.wait_ready()
    return sshd


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "dev root"


def make_file(path: Path, size: int, *, seed: int = 1, random_share: float = 0.5) -> str:
    """Half random (incompressible), half text (compressible) in every 64 KiB; returns sha."""
    rng = random.Random(seed)
    block = 64 * 1024
    text = b"".join(b"layer %06d weights bias gamma beta\n" % i for i in range(2000))
    out = bytearray()
    while len(out) < size:
        r = int(block * random_share)
        out += rng.randbytes(r)
        out += text[: block - r]
    data = bytes(out[:size])
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def staging(root: Path, sha: str) -> Path:
    return root / "objects" / ".incoming" / sha


def assert_landed(root: Path, sha: str) -> None:
    obj = root / "objects" / sha
    assert obj.is_file()
    assert obj.stat().st_mode & 0o777 == 0o600
    assert (root / "objects").stat().st_mode & 0o777 == 0o700
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == sha
    assert not staging(root, sha).exists()
    leftovers = list((root / "objects" / ".incoming").glob(f"{sha}*"))
    assert leftovers == []


def max_chunk_wire(src: Path) -> int:
    """The wire size of the largest chunk of ``src`` (what one re-sent chunk may cost)."""
    return max(c.wire_size for c in build_manifest(src).chunks)


def report(name: str, st: TransferStats) -> None:
    print(
        f"\n{name}: raw={st.raw_size} wire_size={st.wire_size} sent={st.wire_bytes_sent} "
        f"extra={st.wire_bytes_sent - st.wire_size} chunks sent={st.chunks_sent} "
        f"reused={st.chunks_reused}/{st.chunks_total} attempts={st.attempts} "
        f"{st.seconds:.2f}s"
    )


async def test_put_lands_and_second_put_is_skipped(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    src = tmp_path / "model.bin"
    sha = make_file(src, 5 * MiB)
    seen: list[tuple[int, int]] = []
    async with await ensure_sshd.connect() as conn:
        assert await device_has_zstd(conn)
        st = await put_object(conn, str(root), sha, src, progress=lambda d, t: seen.append((d, t)))
        assert_landed(root, sha)
        assert not st.skipped
        assert (st.chunks_total, st.chunks_sent, st.chunks_reused) == (5, 5, 0)
        assert st.wire_bytes_sent == st.wire_size < st.raw_size == 5 * MiB
        assert seen == [(i * MiB, 5 * MiB) for i in range(1, 6)]

        again = await put_object(conn, str(root), sha, src)
        assert again.skipped and again.wire_bytes_sent == 0 and again.chunks_sent == 0
        again = await put_object(conn, str(root), sha, src, verify_existing=True)
        assert again.skipped and again.wire_bytes_sent == 0


async def test_resume_after_abort_resends_at_most_one_chunk(
    ensure_sshd: Sshd, tmp_path: Path, root: Path
):
    src = tmp_path / "model.bin"
    sha = make_file(src, 5 * MiB, seed=2)
    conns: list[asyncssh.SSHClientConnection] = []

    async def connect() -> asyncssh.SSHClientConnection:
        conns.append(await ensure_sshd.connect())
        return conns[-1]

    def progress(_sha: str, done: int, _total: int) -> None:
        if len(conns) == 1 and done == 2 * MiB:
            # cut while chunk 2 is in flight: its .part is opened and being written
            asyncio.get_running_loop().call_later(0.002, conns[0].abort)

    [st] = await put_objects(connect, str(root), [(sha, src)], progress=progress)
    report("abort", st)
    assert_landed(root, sha)
    assert len(conns) == 2 and st.attempts == 2
    assert st.chunks_reused >= 2
    assert st.wire_bytes_sent <= st.wire_size + max_chunk_wire(src)


async def test_corrupted_chunk_is_detected_on_resume(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    src = tmp_path / "model.bin"
    sha = make_file(src, 5 * MiB, seed=3)
    conn = await ensure_sshd.connect()

    def progress(done: int, _total: int) -> None:
        if done == 3 * MiB:
            conn.abort()

    with pytest.raises(Exception) as info:
        await put_object(conn, str(root), sha, src, progress=progress)
    assert is_link_error(info.value, conn), repr(info.value)
    chunks = sorted(p.name for p in staging(root, sha).iterdir() if not p.name.endswith(".part"))
    assert [c.split(".")[0] for c in chunks] == ["0", "1", "2"]
    victim = staging(root, sha) / next(c for c in chunks if c.startswith("1."))
    data = bytearray(victim.read_bytes())
    data[100:110] = bytes(b ^ 0xFF for b in data[100:110])
    victim.write_bytes(bytes(data))  # same size, same name, wrong content

    async with await ensure_sshd.connect() as conn2:
        st = await put_object(conn2, str(root), sha, src)
    report("corrupt", st)
    assert_landed(root, sha)
    assert (st.chunks_reused, st.chunks_sent) == (2, 3)


async def test_wrong_sha_raises_and_leaves_nothing(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    src = tmp_path / "model.bin"
    make_file(src, 3 * MiB, seed=4)
    wrong = hashlib.sha256(b"something else").hexdigest()
    async with await ensure_sshd.connect() as conn:
        with pytest.raises(TransferError, match="hashes to"):
            await put_object(conn, str(root), wrong, src)
        assert not (root / "objects" / wrong).exists()
        assert not staging(root, wrong).exists()

        # the device-side check: a chunk damaged on the device after it was written this
        # call (so it is trusted) makes the assembled object hash wrong
        sha = hashlib.sha256(src.read_bytes()).hexdigest()

        def damage(done: int, total: int) -> None:
            if done == total:
                victim = next(staging(root, sha).glob("0.*.raw"))
                data = bytearray(victim.read_bytes())
                data[0] ^= 0xFF
                victim.write_bytes(bytes(data))

        with pytest.raises(TransferError, match="chunks were removed"):
            await put_object(conn, str(root), sha, src, compress=False, progress=damage)
        assert not (root / "objects" / sha).exists()
        assert not staging(root, sha).exists()
        assert list((root / "objects" / ".incoming").iterdir()) == []


async def test_uncompressed_and_compression_saves_wire(
    ensure_sshd: Sshd, tmp_path: Path, root: Path
):
    src = tmp_path / "model.bin"
    sha = make_file(src, 3 * MiB + 12345, seed=5, random_share=0.25)
    async with await ensure_sshd.connect() as conn:
        raw = await put_object(conn, str(root / "raw"), sha, src, compress=False)
        zst = await put_object(conn, str(root / "zst"), sha, src, compress=True)
    assert_landed(root / "raw", sha)
    assert_landed(root / "zst", sha)
    assert raw.wire_bytes_sent == raw.raw_size == 3 * MiB + 12345
    assert raw.chunks_total == 4
    assert zst.wire_bytes_sent < raw.wire_bytes_sent * 0.5
    report("raw", raw)
    report("zst", zst)


async def test_missing_objects(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    a, b, c = (tmp_path / n for n in "abc")
    sha_a = make_file(a, 1000, seed=6)
    sha_b = make_file(b, 0, seed=7)  # the empty object works too
    sha_c = make_file(c, 70_000, seed=8)
    async with await ensure_sshd.connect() as conn:
        assert await missing_objects(conn, str(root), [sha_a, sha_b, sha_c]) == {
            sha_a,
            sha_b,
            sha_c,
        }
        await put_object(conn, str(root), sha_a, a)
        await put_object(conn, str(root), sha_b, b)
        assert await missing_objects(conn, str(root), [sha_a, sha_b, sha_c]) == {sha_c}
        assert await missing_objects(conn, str(root), []) == set()
        # put_objects sends only what the device lacks
        stats = await put_objects(ensure_sshd.connect, str(root), [(sha_a, a), (sha_c, c)])
        assert [s.skipped for s in stats] == [True, False]
        assert await missing_objects(conn, str(root), [sha_a, sha_b, sha_c]) == set()
    assert (root / "objects" / sha_b).stat().st_size == 0
    assert_landed(root, sha_c)


async def test_root_with_spaces_and_quotes(ensure_sshd: Sshd, tmp_path: Path):
    root = tmp_path / "dev ice root" / "it's $HOME; x y"
    src = tmp_path / "m.bin"
    sha = make_file(src, MiB + 1, seed=9)
    async with await ensure_sshd.connect() as conn:
        st = await put_object(conn, str(root), sha, src, chunk_size=256 * 1024)
        assert await missing_objects(conn, str(root), [sha]) == set()
    assert st.chunks_total == 5
    assert_landed(root, sha)


async def test_link_cut_resumes_by_itself(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    sshd = ensure_sshd
    src = tmp_path / "model.bin"
    sha = make_file(src, 5 * MiB, seed=10)
    loop = asyncio.get_running_loop()
    cut_at: list[float] = []

    def progress(_sha: str, done: int, _total: int) -> None:
        if not cut_at and done == 2 * MiB:
            sshd.cut()  # the device (and every session) is gone for 3 s
            cut_at.append(time.monotonic())
            loop.call_later(3.0, sshd.start)

    [st] = await put_objects(sshd.connect, str(root), [(sha, src)], progress=progress)
    report("cut", st)
    assert cut_at and time.monotonic() - cut_at[0] >= 3.0
    assert_landed(root, sha)
    assert st.attempts >= 2 and st.chunks_reused >= 2
    assert st.wire_bytes_sent <= st.wire_size + max_chunk_wire(src)


async def test_frozen_device_is_detected_by_keepalive_and_resumed(
    ensure_sshd: Sshd, tmp_path: Path, root: Path
):
    """A link that goes silent (no RST: sshd and its sessions SIGSTOPped for 3 s) is found
    dead by keepalives; the old session wakes up later beside the new one."""
    sshd = ensure_sshd
    src = tmp_path / "model.bin"
    sha = make_file(src, 5 * MiB, seed=11)
    loop = asyncio.get_running_loop()
    frozen: list[int] = []

    async def connect() -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            sshd.port,
            username="root",
            client_keys=[sshd.client_key],
            known_hosts=str(sshd.base / "known_hosts"),
            keepalive_interval=0.5,
            keepalive_count_max=2,
            connect_timeout=2,
        )

    def thaw() -> None:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def progress(_sha: str, done: int, _total: int) -> None:
        if not frozen and done == 2 * MiB:
            assert sshd.proc is not None
            frozen.extend([sshd.proc.pid, *_descendants(sshd.proc.pid)])
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            loop.call_later(3.0, thaw)

    try:
        [st] = await put_objects(connect, str(root), [(sha, src)], progress=progress)
    finally:
        thaw()
    report("frozen", st)
    assert frozen
    assert_landed(root, sha)
    assert st.attempts >= 2 and st.chunks_reused >= 2
    assert st.wire_bytes_sent <= st.wire_size + max_chunk_wire(src)


async def test_gives_up_with_unreachable(ensure_sshd: Sshd, tmp_path: Path, root: Path):
    src = tmp_path / "m.bin"
    sha = make_file(src, 1000, seed=12)
    ensure_sshd.cut()
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match="no progress"):
        await put_objects(ensure_sshd.connect, str(root), [(sha, src)], give_up_after=1.5)
    assert 1.5 <= time.monotonic() - t0 < 5


@pytest.fixture
def fresh_caches():
    """The transfer's per-process caches, empty before and after the test."""
    from mlops_edge_ssh import transfer

    def clear() -> None:
        transfer.forget_wire()
        with transfer._CACHE_LOCK:
            transfer._MANIFESTS.clear()
            transfer._MANIFEST_LOCKS.clear()

    clear()
    yield transfer
    clear()


def test_a_manifest_and_the_wire_chunks_are_made_once_per_object(
    tmp_path: Path, monkeypatch, fresh_caches
):
    """A rollout sends one object to many devices: its manifest is built once, the chunks
    compressed once; a file that does not hash to the sha asked for is never remembered."""
    transfer = fresh_caches
    src = tmp_path / "layer.tar"
    sha = make_file(src, 3 * MiB, seed=7)
    built: list[Path] = []
    real = transfer.build_manifest

    def counting(source, **kw):
        built.append(source)
        return real(source, **kw)

    monkeypatch.setattr(transfer, "build_manifest", counting)
    first = transfer.manifest_for(src, sha)
    assert transfer.manifest_for(src, sha) is first and len(built) == 1
    assert transfer.manifest_for(src, sha, chunk_size=MiB // 2) is not first  # its own chunks
    wrong = hashlib.sha256(b"another object").hexdigest()
    for _ in range(2):
        with pytest.raises(TransferError, match="hashes to"):
            transfer.manifest_for(src, wrong)
    assert len(built) == 4  # the wrong one was built again, not taken from memory
    assert (wrong, transfer.DEFAULT_CHUNK_SIZE, True) not in transfer._MANIFEST_LOCKS

    chunk, other = first.chunks[1], first.chunks[2]
    made = transfer._read_wire(src, chunk, keep=True)
    assert transfer._read_wire(src, other) and other.wire_sha256 not in transfer._WIRE
    src.write_bytes(b"\0" * src.stat().st_size)  # the next read of the file would refuse it
    assert transfer._read_wire(src, chunk, keep=True) == made  # kept, checked when made
    with pytest.raises(TransferError, match="changed during the transfer"):
        transfer._read_wire(src, other, keep=True)
    transfer.forget_wire()
    with pytest.raises(TransferError, match="changed during the transfer"):
        transfer._read_wire(src, chunk, keep=True)


def test_kept_chunks_stop_at_the_cap_and_keep_the_first(tmp_path: Path, monkeypatch, fresh_caches):
    """Past WIRE_BYTES_KEPT no chunk is added and none evicted: devices read the chunks in
    the same order, so evicting the oldest would leave the next device nothing to reuse."""
    transfer = fresh_caches
    src = tmp_path / "big.bin"
    sha = make_file(src, 4 * MiB, seed=9)
    manifest = transfer.manifest_for(src, sha)
    first = manifest.chunks[0]
    monkeypatch.setattr(transfer, "WIRE_BYTES_KEPT", first.wire_size + 10)
    for c in manifest.chunks:
        transfer._read_wire(src, c, keep=True)
    assert list(transfer._WIRE) == [first.wire_sha256]
    assert transfer._wire_bytes == first.wire_size
