"""Prediction logs back from a device: a resumable pull of the server's segment files.

The model server on a device writes its prediction log where `--log-dir` points: the
agent passes `{logs}` = ROOT/logs, so the segments are `ROOT/logs/predictions-*.jsonl`
(closed) and one `ROOT/logs/predictions-*.jsonl.open` (being written). ROOT/logs/predlog/
(where the agent's `predlogs` command looks) is read too, should the server be pointed
there later.

`pull` lists both folders over SFTP (sizes included, one round trip per folder) and copies
only the bytes it does not have yet, from the offset recorded in the fleet store
(`pulls`, keyed by device and segment stem, so the open segment's bytes count once it is
renamed to `.jsonl`). Each chunk is written and fsynced before its offset is recorded, so
a cut (or a killed controller) resumes from the last recorded byte. A closed segment is
complete when the local copy has exactly its size; it is then renamed to `STEM.jsonl` in
the device's folder and (with `delete_remote`) removed from the device, so its disk does
not fill. What is done with the complete segments (publishing them to monitoring) is the
caller's: `FleetTarget.fetch_prediction_logs`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from mlops_edge_ssh.inventory import Device
from mlops_edge_ssh.ssh import LOST, DeviceError, Links, Unreachable
from mlops_edge_ssh.store import FleetStore

REMOTE_DIRS = ("logs", "logs/predlog")
SEGMENT = re.compile(r"(predictions-[A-Za-z0-9_.-]+?)\.jsonl(\.open)?")
CHUNK = 256 * 1024


@dataclass
class RemoteSegment:
    path: str  # absolute, on the device
    stem: str
    size: int
    closed: bool


@dataclass
class PullResult:
    device: str
    listed: int = 0
    bytes: int = 0  # pulled by this call
    complete: list[Path] = field(default_factory=list)  # STEM.jsonl in the device's folder
    removed_remote: int = 0

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "listed": self.listed,
            "bytes": self.bytes,
            "complete": [p.name for p in self.complete],
            "removed_remote": self.removed_remote,
        }


async def list_segments(sftp: asyncssh.SFTPClient, root: str) -> list[RemoteSegment]:
    out: dict[str, RemoteSegment] = {}
    for sub in REMOTE_DIRS:
        folder = posixpath.join(root, sub)
        try:
            names = await sftp.readdir(folder)
        except asyncssh.SFTPNoSuchFile:
            continue
        for n in names:
            name = n.filename if isinstance(n.filename, str) else n.filename.decode()
            m = SEGMENT.fullmatch(name)
            if not m or n.attrs.size is None:
                continue
            seg = RemoteSegment(
                posixpath.join(folder, name), m.group(1), int(n.attrs.size), not m.group(2)
            )
            # a segment renamed between two listings shows up once, as the closed one
            if seg.stem not in out or seg.closed:
                out[seg.stem] = seg
    return sorted(out.values(), key=lambda s: s.stem)


def _part(dest_dir: Path, stem: str) -> Path:
    return dest_dir / f".{stem}.jsonl.part"


async def pull(
    links: Links,
    dev: Device,
    dest_dir: Path,
    store: FleetStore,
    *,
    delete_remote: bool = True,
    chunk: int = CHUNK,
    on_chunk: Callable[[str, int], None] | None = None,
) -> PullResult:
    """Bring `dev`'s prediction-log segments into `dest_dir` (its own folder), new bytes
    only; Unreachable when the link fails (what was written and recorded stays)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    res = PullResult(dev.name)
    conn = await links.get(dev)
    try:
        async with conn.start_sftp_client() as sftp:
            segments = await list_segments(sftp, dev.root)
            res.listed = len(segments)
            for seg in segments:
                final = dest_dir / f"{seg.stem}.jsonl"
                if not final.exists():
                    await _pull_one(sftp, dev, seg, dest_dir, store, res, chunk, on_chunk)
                if final.exists():
                    res.complete.append(final)
                    if delete_remote and seg.closed:
                        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                            await sftp.remove(seg.path)
                        res.removed_remote += 1
    except LOST as e:
        links.drop(dev)
        raise Unreachable(
            dev.name, f"the link dropped while pulling prediction logs ({e})."
        ) from None
    except asyncssh.Error as e:
        links.drop(dev)
        raise Unreachable(dev.name, f"the prediction-log pull failed ({e}).") from None
    # complete segments still here from an earlier call (published since?) are the caller's
    for f in sorted(dest_dir.glob("predictions-*.jsonl")):
        if f not in res.complete:
            res.complete.append(f)
    return res


async def _pull_one(sftp, dev, seg, dest_dir, store, res, chunk, on_chunk) -> None:
    part = _part(dest_dir, seg.stem)
    recorded = store.pull_offset(dev.name, seg.stem)
    have = part.stat().st_size if part.exists() else 0
    offset = min(recorded, have)
    if offset > seg.size:  # the device's file is not the one we were copying: start over
        offset = 0
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, offset)  # bytes past the recorded offset were never vouched for
        if offset != recorded:
            store.set_pull_offset(dev.name, seg.stem, offset)
        if offset < seg.size:
            async with sftp.open(seg.path, "rb") as fh:
                while True:
                    data = await fh.read(chunk, offset)
                    if not data:
                        break
                    os.pwrite(fd, data, offset)
                    os.fsync(fd)
                    offset += len(data)
                    res.bytes += len(data)
                    store.set_pull_offset(dev.name, seg.stem, offset)
                    if on_chunk:
                        on_chunk(seg.stem, offset)
                    if seg.closed and offset >= seg.size:
                        break
    finally:
        os.close(fd)
    if seg.closed:
        size = part.stat().st_size
        if size != seg.size:  # a closed segment never changes: anything else is a bad copy
            part.unlink()
            store.set_pull_offset(dev.name, seg.stem, 0)
            raise DeviceError(
                dev.name,
                f"{seg.path}: copied {size} bytes of {seg.size}; it is pulled again next time.",
            )
        os.replace(part, dest_dir / f"{seg.stem}.jsonl")


__all__ = ["PullResult", "RemoteSegment", "list_segments", "pull"]
