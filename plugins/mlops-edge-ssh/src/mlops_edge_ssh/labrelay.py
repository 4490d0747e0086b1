"""A flaky link for a teaching lab: a userspace TCP relay in front of one lab device's sshd.

    python -m mlops_edge_ssh.labrelay LISTEN_PORT TARGET_PORT PARAMS.json LOG

It accepts on 127.0.0.1:LISTEN_PORT and relays to 127.0.0.1:TARGET_PORT. PARAMS.json is
read again whenever it changes (a lab step rewrites it; open connections keep what they
drew when they opened):

    {"rate_kbit": 512,            # both directions share one token bucket each; 0: no limit
     "cut_after_s": [3, 8],       # a connection is cut at a random time in this range ...
     "cut_chance": 0.5,           # ... with this chance, once the first cut happened
     "seed": 7}

The first cut is sure and comes in the middle of a delivery: when a connection closes
while an older one is open (a rollout's transfer beside its control connection), the
older one is cut SURE_CUT_S after it next carries a command alone (install, switch).

A cut resets both sides at once, as a radio link that drops does to a TCP session. The
draws come from one random generator seeded by `seed` (reseeded when the file changes), so
a lab replays the same sequence. Every cut is one line in LOG.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

CHUNK = 16 * 1024
SURE_CUT_S = 0.3
CLEAN: dict[str, Any] = {"rate_kbit": 0, "cut_after_s": [0, 0], "cut_chance": 0.0, "seed": 0}


class Bucket:
    """A token bucket of `rate` bytes a second (0: unlimited), shared by a direction."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.tokens = 0.0
        self.at = time.monotonic()

    async def take(self, n: int) -> None:
        while self.rate > 0:
            now = time.monotonic()
            self.tokens = min(self.rate / 4, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= n or self.tokens >= self.rate / 4:
                self.tokens -= n
                return
            await asyncio.sleep(min(0.25, (n - self.tokens) / self.rate))


class Relay:
    def __init__(self, target: int, params: Path, log: Path) -> None:
        self.target = target
        self.params_path = params
        self.log_path = log
        self.params: dict[str, Any] = dict(CLEAN)
        self.mtime = -1.0
        self.rng = random.Random(0)
        self.cuts = 0
        self.count = 0
        self.open: dict[int, asyncio.Event] = {}  # open connections, oldest first
        self.armed: int | None = None  # the connection the sure first cut is for
        self.sure_pending = False
        self.up = Bucket()  # client -> device
        self.down = Bucket()  # device -> client

    def _reload(self) -> None:
        try:
            mtime = self.params_path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self.mtime:
            return
        try:
            doc = json.loads(self.params_path.read_text())
        except (OSError, ValueError):
            return  # a half-written file: keep the last parameters
        self.mtime = mtime
        self.params = {**CLEAN, **doc}
        self.rng = random.Random(int(self.params.get("seed") or 0))
        self.cuts = 0
        self.sure_pending, self.armed = False, None
        rate = float(self.params.get("rate_kbit") or 0) * 125.0
        self.up.rate = self.down.rate = rate
        self._log(f"parameters {json.dumps(self.params, sort_keys=True)}")

    def _log(self, text: str) -> None:
        with self.log_path.open("a") as fh:
            fh.write(f"{time.time():.3f} {text}\n")

    def _flaky(self) -> bool:
        hi = float((self.params.get("cut_after_s") or (0, 0))[1])
        return hi > 0 and float(self.params.get("cut_chance") or 0) > 0

    def _draw(self) -> float | None:
        """When this connection is cut (seconds after it opened), None: never."""
        if not self._flaky():
            return None
        lo, hi = (float(x) for x in self.params.get("cut_after_s") or (0, 0))
        at, roll = self.rng.uniform(lo, hi), self.rng.random()
        if self.cuts == 0:
            return None  # the first cut is the sure one (_closed), in the middle of a delivery
        return at if roll < float(self.params.get("cut_chance") or 0) else None

    def _closed(self, n: int) -> None:
        """A connection closed while an older one is open: a transfer beside a rollout's
        control connection. The first time, that control connection is armed: the next
        command it carries once it is alone again (install, switch) is cut SURE_CUT_S in,
        so the device is cut off in the middle of its delivery every time a lab runs,
        while short probes (one connection) never are."""
        older = [m for m in self.open if m < n]
        if self.cuts or self.armed is not None or not older or not self._flaky():
            return
        self.armed = older[0]

    def _sent(self, n: int) -> None:
        """Connection n carried bytes towards the device."""
        if self.armed != n or len(self.open) != 1 or self.sure_pending:
            return
        self.sure_pending = True
        asyncio.get_running_loop().call_later(SURE_CUT_S, self.open[n].set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reload()
        self.count += 1
        n = self.count
        cut_at = self._draw()
        try:
            dev_reader, dev_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        cut = self.open[n] = asyncio.Event()
        pumps = [
            asyncio.create_task(self._pump(reader, dev_writer, self.up, lambda: self._sent(n))),
            asyncio.create_task(self._pump(dev_reader, writer, self.down)),
        ]
        cutter = asyncio.create_task(cut.wait())
        t0 = time.monotonic()
        try:
            done, _ = await asyncio.wait(
                [*pumps, cutter], timeout=cut_at, return_when=asyncio.FIRST_COMPLETED
            )
            if cutter in done or not done:  # still open at its cut time: the link drops
                self.cuts += 1
                self.sure_pending, self.armed = False, None
                self._log(f"cut connection {n} after {time.monotonic() - t0:.1f}s")
            else:
                self._log(f"connection {n} closed after {time.monotonic() - t0:.1f}s")
        finally:
            del self.open[n]
            if self.armed == n:  # it ended before its cut: the next one is armed instead
                self.sure_pending, self.armed = False, None
            for task in (*pumps, cutter):
                task.cancel()
            for w in (writer, dev_writer):
                w.transport.abort()
        self._closed(n)

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, bucket: Bucket, on_data=None
    ):
        while True:
            data = await src.read(CHUNK)
            if not data:
                return
            if on_data is not None:
                on_data()
            await bucket.take(len(data))
            dst.write(data)
            await dst.drain()


async def main(listen: int, target: int, params: Path, log: Path) -> None:
    relay = Relay(target, params, log)
    relay._reload()
    server = await asyncio.start_server(relay.handle, "127.0.0.1", listen, reuse_address=True)
    relay._log(f"relaying 127.0.0.1:{listen} -> 127.0.0.1:{target}")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":  # pragma: no cover (run as a subprocess by labdevices)
    listen_port, target_port, params_file, log_file = sys.argv[1:5]
    asyncio.run(main(int(listen_port), int(target_port), Path(params_file), Path(log_file)))
