"""Teaching labs, measured against issue 17's targets: reset <= 5 s, an injection <= 2 s,
a check verdict <= 3 s; `class init N` time and the memory (RSS sum) of N idle student
workspaces with their servers.

    .venv/bin/python bench/lab.py [--students 30] [--scenario drift] [--repeat 3]

Everything is real: the scenario's setup trains, its servers are local processes on
loopback, a class is N workspaces each with its own server. The temp folders are removed
and every server stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlops_console.labs import actions, classroom
from mlops_console.workspace import Workspace


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _server_pids(root: Path) -> list[int]:
    pids = []
    for f in root.glob("student-*/.mlops/deployments/*/pid"):
        try:
            pids.append(int(f.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _line(what: str, seconds: float, target: float | None) -> None:
    if target is None:
        print(f"{what:<44} {seconds:8.2f} s")
    else:
        verdict = "ok" if seconds <= target else "OVER"
        print(
            f"{what:<44} {seconds:8.2f} s   target <= {target:.0f} s  "
            f"({seconds / target:.2f} of it, {verdict})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--scenario", default="drift")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=8400)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        try:
            t = time.perf_counter()
            ws.labs.start(args.scenario)
            build = time.perf_counter() - t
            sc = ws.labs.current()
            assert sc is not None
            resets, checks, injections = [], [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                ws.labs.reset()
                resets.append(time.perf_counter() - t)
                t = time.perf_counter()
                ws.labs.status()
                checks.append(time.perf_counter() - t)
                # the heaviest `start` injection alone: its steps as the timeline fires them
                entry = max(sc.timeline, key=lambda e: len(e.steps))
                st = ws.labs._state()
                t = time.perf_counter()
                for step in entry.steps:
                    actions.run_step(ws, sc, st, step)
                injections.append(time.perf_counter() - t)
            print(f"scenario {args.scenario}: starting state built in {build:.1f} s (trains)")
            _line(f"reset (median of {args.repeat})", statistics.median(resets), 5)
            _line(f"injection '{entry.say[:28]}' (median)", statistics.median(injections), 2)
            _line(
                f"check verdict, {len(sc.objectives)} objectives (median)",
                statistics.median(checks),
                3,
            )
            snap = ws.state / "lab" / "start"
            root = Path(tmp) / "class"
            t = time.perf_counter()
            classroom.init(root, args.students, args.scenario, args.base_port, snapshot=snap)
            took = time.perf_counter() - t
            try:
                _line(f"class init {args.students} (from the built snapshot)", took, None)
                t = time.perf_counter()
                classroom.status(root)
                _line(f"class status {args.students}", time.perf_counter() - t, None)
                pids = _server_pids(root)
                total = sum(_rss_mb(p) for p in pids)
                print(
                    f"memory of {args.students} idle students: {len(pids)} servers, RSS sum "
                    f"{total:,.0f} MB ({total / max(1, len(pids)):.0f} MB each)"
                )
                t = time.perf_counter()
                classroom.reset(root)
                _line(f"class reset {args.students}", time.perf_counter() - t, None)
            finally:
                classroom.stop(root)
        finally:
            ws.labs.stop()
            ws.close()


if __name__ == "__main__":
    main()
