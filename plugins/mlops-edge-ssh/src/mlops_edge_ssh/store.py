"""The fleet's durable state: rollouts, each device's place in them, the desired and the
last observed state of every device, and an event log. One SQLite file,
`.mlops/fleet.db` (0600), written in short transactions so a controller killed at any
point leaves a record it can resume from."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL,
  ref TEXT NOT NULL, selector TEXT, waves TEXT NOT NULL, soak REAL NOT NULL,
  max_failed REAL NOT NULL, max_unreachable REAL NOT NULL, auto_rollback INTEGER NOT NULL,
  gate TEXT NOT NULL, golden TEXT NOT NULL, state TEXT NOT NULL, wave INTEGER NOT NULL,
  reason TEXT, owner TEXT, heartbeat REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
  created_by TEXT
);
CREATE TABLE IF NOT EXISTS rollout_devices (
  rollout_id TEXT NOT NULL, device TEXT NOT NULL, wave INTEGER NOT NULL, state TEXT NOT NULL,
  previous TEXT, attempts INTEGER NOT NULL DEFAULT 0, detail TEXT, progress REAL,
  updated_at REAL NOT NULL, PRIMARY KEY (rollout_id, device)
);
CREATE TABLE IF NOT EXISTS desired (
  device TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL,
  rollout_id TEXT, set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS observed (
  device TEXT PRIMARY KEY, seen_at REAL, checked_at REAL NOT NULL, reachable INTEGER NOT NULL,
  serving TEXT, model TEXT, version INTEGER, health TEXT, telemetry TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, rollout_id TEXT, device TEXT,
  kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pulls (
  device TEXT NOT NULL, path TEXT NOT NULL, offset INTEGER NOT NULL,
  PRIMARY KEY (device, path)
);
"""

ACTIVE = ("running", "pausing", "aborting")
FINAL = ("done", "aborted", "failed")
DEVICE_DONE = ("healthy", "failed", "rolled_back", "skipped")


@dataclass
class RolloutDevice:
    device: str
    wave: int
    state: str  # pending sending switching gating healthy failed unreachable rolled_back skipped
    previous: str | None
    attempts: int
    detail: dict[str, Any]
    progress: float | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "wave": self.wave,
            "state": self.state,
            "previous": self.previous,
            "attempts": self.attempts,
            "progress": self.progress,
            "detail": self.detail,
            "updated_at": self.updated_at,
        }


@dataclass
class Rollout:
    id: str
    model: str
    version: int
    digest: str
    ref: str
    selector: str | None
    waves: list[list[str]]
    soak: float
    max_failed: float
    max_unreachable: float
    auto_rollback: bool
    gate: dict[str, Any]
    golden: dict[str, Any]
    state: str
    wave: int
    reason: str | None
    owner: str | None
    heartbeat: float | None
    created_at: float
    updated_at: float
    created_by: str | None
    devices: list[RolloutDevice] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.model}/{self.version}"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.state] = out.get(d.state, 0) + 1
        return out

    def to_dict(self, golden: bool = False) -> dict[str, Any]:
        d = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "selector": self.selector,
            "state": self.state,
            "reason": self.reason,
            "wave": self.wave,
            "waves": self.waves,
            "soak_s": self.soak,
            "max_failed": self.max_failed,
            "max_unreachable": self.max_unreachable,
            "auto_rollback": self.auto_rollback,
            "counts": self.counts(),
            "devices": [x.to_dict() for x in self.devices],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if golden:
            d["golden"] = self.golden
        return d


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(0o600)
    return conn


class FleetStore:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "fleet.db"
        self.conn = _open(self.path)

    def close(self) -> None:
        self.conn.close()

    def _tx(self):
        return _Tx(self.conn)

    # -- rollouts
    def create_rollout(self, r: dict[str, Any], device_waves: list[tuple[str, int, str]]) -> str:
        rid = time.strftime("r%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT INTO rollouts (id, model, version, digest, ref, selector, waves, soak, "
                "max_failed, max_unreachable, auto_rollback, gate, golden, state, wave, reason, "
                "created_at, updated_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rid,
                    r["model"],
                    r["version"],
                    r["digest"],
                    r["ref"],
                    r.get("selector"),
                    json.dumps(r["waves"]),
                    r["soak"],
                    r["max_failed"],
                    r["max_unreachable"],
                    int(r["auto_rollback"]),
                    json.dumps(r["gate"]),
                    json.dumps(r["golden"]),
                    "running",
                    0,
                    None,
                    now,
                    now,
                    r.get("created_by"),
                ),
            )
            for name, wave, state in device_waves:
                c.execute(
                    "INSERT INTO rollout_devices (rollout_id, device, wave, state, detail, "
                    "updated_at) VALUES (?,?,?,?,?,?)",
                    (rid, name, wave, state, json.dumps({}), now),
                )
        return rid

    def rollout(self, rid: str | None = None) -> Rollout | None:
        if rid is None:
            row = self.conn.execute(
                "SELECT * FROM rollouts ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        else:
            row = self.conn.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        if row is None:
            return None
        r = Rollout(
            id=row["id"],
            model=row["model"],
            version=row["version"],
            digest=row["digest"],
            ref=row["ref"],
            selector=row["selector"],
            waves=json.loads(row["waves"]),
            soak=row["soak"],
            max_failed=row["max_failed"],
            max_unreachable=row["max_unreachable"],
            auto_rollback=bool(row["auto_rollback"]),
            gate=json.loads(row["gate"]),
            golden=json.loads(row["golden"]),
            state=row["state"],
            wave=row["wave"],
            reason=row["reason"],
            owner=row["owner"],
            heartbeat=row["heartbeat"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            created_by=row["created_by"],
        )
        r.devices = [
            RolloutDevice(
                device=d["device"],
                wave=d["wave"],
                state=d["state"],
                previous=d["previous"],
                attempts=d["attempts"],
                detail=json.loads(d["detail"] or "{}"),
                progress=d["progress"],
                updated_at=d["updated_at"],
            )
            for d in self.conn.execute(
                "SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY wave, rowid", (r.id,)
            )
        ]
        return r

    def rollouts(self, limit: int = 20) -> list[Rollout]:
        ids = [
            row[0]
            for row in self.conn.execute(
                "SELECT id FROM rollouts ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        ]
        return [r for r in (self.rollout(i) for i in ids) if r is not None]

    def active(self) -> Rollout | None:
        row = self.conn.execute(
            "SELECT id FROM rollouts WHERE state IN ('running','pausing','aborting','paused') "
            "ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        return self.rollout(row[0]) if row else None

    def set_rollout(self, rid: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as c:
            c.execute(f"UPDATE rollouts SET {cols} WHERE id = ?", (*fields.values(), rid))

    def claim(self, rid: str, owner: str, stale_after: float = 20.0) -> bool:
        """Become the one controller of `rid`, unless a live one holds it (heartbeat)."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT owner, heartbeat FROM rollouts WHERE id = ?", (rid,)).fetchone()
            if row is None:
                return False
            if (
                row["owner"]
                and row["owner"] != owner
                and (row["heartbeat"] or 0) > now - stale_after
            ):
                return False
            c.execute(
                "UPDATE rollouts SET owner = ?, heartbeat = ? WHERE id = ?", (owner, now, rid)
            )
        return True

    def beat(self, rid: str, owner: str) -> bool:
        """Renew `owner`'s hold on the rollout; False when another controller has it now."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE rollouts SET heartbeat = ? WHERE id = ? AND owner = ?",
                (time.time(), rid, owner),
            )
            return cur.rowcount == 1

    def release(self, rid: str, owner: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE rollouts SET owner = NULL, heartbeat = NULL WHERE id = ? AND owner = ?",
                (rid, owner),
            )

    def set_device(self, rid: str, device: str, **fields: Any) -> None:
        if "detail" in fields:
            fields["detail"] = json.dumps(fields["detail"], default=str)
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as c:
            c.execute(
                f"UPDATE rollout_devices SET {cols} WHERE rollout_id = ? AND device = ?",
                (*fields.values(), rid, device),
            )

    # -- desired and observed
    def set_desired(self, device: str, model: str, version: int, digest: str, rid: str | None):
        with self._tx() as c:
            c.execute(
                "INSERT INTO desired (device, model, version, digest, rollout_id, set_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(device) DO UPDATE SET model=excluded.model, "
                "version=excluded.version, digest=excluded.digest, "
                "rollout_id=excluded.rollout_id, set_at=excluded.set_at",
                (device, model, version, digest, rid, time.time()),
            )

    def clear_desired(self, device: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM desired WHERE device = ?", (device,))

    def desired(self) -> dict[str, dict[str, Any]]:
        return {r["device"]: dict(r) for r in self.conn.execute("SELECT * FROM desired")}

    def observe(self, device: str, reachable: bool, **fields: Any) -> None:
        now = time.time()
        if "telemetry" in fields:
            fields["telemetry"] = json.dumps(fields["telemetry"], default=str)
        row = {"device": device, "checked_at": now, "reachable": int(reachable), **fields}
        if reachable:
            row["seen_at"] = now
            row.setdefault("error", None)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        upd = ", ".join(f"{k}=excluded.{k}" for k in row if k != "device")
        with self._tx() as c:
            c.execute(
                f"INSERT INTO observed ({cols}) VALUES ({marks}) "
                f"ON CONFLICT(device) DO UPDATE SET {upd}",
                tuple(row.values()),
            )

    def observed(self) -> dict[str, dict[str, Any]]:
        out = {}
        for r in self.conn.execute("SELECT * FROM observed"):
            d = dict(r)
            d["telemetry"] = json.loads(d["telemetry"]) if d.get("telemetry") else {}
            out[d["device"]] = d
        return out

    # -- events
    def event(self, kind: str, message: str, rid: str | None = None, device: str | None = None):
        with self._tx() as c:
            c.execute(
                "INSERT INTO events (ts, rollout_id, device, kind, message) VALUES (?,?,?,?,?)",
                (time.time(), rid, device, kind, message),
            )

    def events(self, rid: str | None = None, device: str | None = None, limit: int = 200):
        q = "SELECT * FROM events WHERE 1=1"
        args: list[Any] = []
        if rid:
            q += " AND rollout_id = ?"
            args.append(rid)
        if device:
            q += " AND device = ?"
            args.append(device)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self.conn.execute(q, args)][::-1]

    # -- prediction log pulls
    def pull_offset(self, device: str, path: str) -> int:
        row = self.conn.execute(
            "SELECT offset FROM pulls WHERE device = ? AND path = ?", (device, path)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_pull_offset(self, device: str, path: str, offset: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO pulls (device, path, offset) VALUES (?,?,?) ON CONFLICT(device, path) "
                "DO UPDATE SET offset = excluded.offset",
                (device, path, offset),
            )


class _Tx:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
