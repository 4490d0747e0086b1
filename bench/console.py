"""Console speed with a big workspace: 10,000 runs, 1,000 model versions, 100,000 jobs.

    make bench            # or: .venv/bin/python bench/console.py

Prints the cold start (a new process: imports, opening the workspace) to the first frame
and to the first screen filled and, per screen, the time from switching to it until its table is filled, and
the time to apply a filter. Targets: cold start < 1 s, each screen < 200 ms.
Writes bench/results/console.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seed(root: Path) -> None:
    from mlops_console.workspace import Workspace

    ws = Workspace.init(root)
    t = time.time()
    for i in range(10_000):
        run = ws.runs.start(experiment=f"exp{i % 10}", params={"i": i})
        run.log_metric("holdout_roc_auc", 0.5 + (i % 500) / 1000)
        run.end()
    digest = ws.artifacts.put_bytes(b"model")
    for i in range(1_000):
        ws.models.register(f"model{i % 20}", artifact=digest, metrics={"holdout_roc_auc": 0.7})
    now = time.time()
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO job (kind, pipeline, status, trigger, attempt, max_attempts, cancel_requested, detail, "
            "result, log_path, created_at) VALUES ('chain', ?, 'succeeded', 'schedule', 1, 1, 0, 'done', '{}', '', ?)",
            [(f"p{i % 7}", now - i) for i in range(100_000)],
        )
    ws.close()
    print(f"seeded in {time.time() - t:.1f} s", flush=True)


COLD = """
import sys, time
t0 = float(sys.argv[2])
from mlops_console.tui.app import MlopsConsole
from mlops_console.workspace import Workspace
import asyncio
async def main():
    app = MlopsConsole(Workspace.open(sys.argv[1]), poll_seconds=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        frame = time.time() - t0  # mounted and painted: the first frame
        while app.listing is None:
            await pilot.pause(0.005)
        print(frame, time.time() - t0)
asyncio.run(main())
"""


async def screens(root: Path) -> dict:
    from mlops_console.tui.app import MlopsConsole
    from mlops_console.tui.areas import AREAS
    from mlops_console.workspace import Workspace

    app = MlopsConsole(Workspace.open(root), poll_seconds=3600)
    out = {}
    async with app.run_test(size=(160, 48)) as pilot:
        while app.listing is None:
            await pilot.pause(0.005)
        for area in AREAS:
            samples = []
            for _ in range(3):
                app.listing = None
                t = time.perf_counter()
                app.show_area(area.name)
                while app.listing is None:
                    await pilot.pause(0.002)
                await pilot.pause()
                samples.append((time.perf_counter() - t) * 1000)
            rows = app.query_one("#table").row_count
            t = time.perf_counter()
            app.apply_filter("1")  # what `/` does: narrows the loaded rows
            await pilot.pause()
            out[area.name] = {
                "first_page_ms": statistics.median(samples),
                "rows_shown": rows,
                "filter_ms": (time.perf_counter() - t) * 1000,
            }
    return out


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="console-bench-")) / "ws"
    seed(root)
    colds = []
    for _ in range(3):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", COLD, str(root), str(t0)],
            capture_output=True,
            text=True,
            check=True,
        )
        frame, filled = out.stdout.strip().splitlines()[-1].split()
        colds.append((float(frame), float(filled)))
    result = {
        "first_frame_s": statistics.median(c[0] for c in colds),
        "cold_start_s": statistics.median(c[1] for c in colds),
        "screens": asyncio.run(screens(root)),
    }
    print(f"\ncold start to the first frame: {result['first_frame_s']:.2f} s (target < 1 s)")
    print(f"cold start to the first screen filled: {result['cold_start_s']:.2f} s")
    print(f"{'screen':12} {'first page (ms)':>16} {'rows':>6} {'filter (ms)':>12}")
    for name, r in result["screens"].items():
        print(f"{name:12} {r['first_page_ms']:16.1f} {r['rows_shown']:6d} {r['filter_ms']:12.1f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "console.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
