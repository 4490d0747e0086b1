"""The whole loop: a new data file in a watched folder to the new model version answering.

    make bench            # or: .venv/bin/python bench/loop.py

A sample workspace runs a daemon; the churn pipeline (as shipped: random search over 20
candidates, checks, gates) deploys locally with canaries. A bounded load generator
(4 threads, about 150 requests/s on loopback) scores throughout. Then the next month's data is appended to the
watched file, and the clock runs until the new version serves as primary. Prints each
stage's time and the failed requests (target: under 30 s, zero failures).
Writes bench/results/loop.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def main() -> None:
    from mlops_console.automation.client import DaemonClient
    from mlops_console.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="loop-bench-")) / "ws"
    ws = Workspace.init(root, sample=True)
    ws.data.add("churn", "data/churn.csv", timestamp="event_time", entities=["customer_id"])
    ws.data.ingest("churn")
    spec = root / "pipelines" / "churn.toml"
    text = spec.read_text().replace(
        '[deploy]                 # used by the deploy targets\ntarget = "local"\ncanary_percent = 10',
        '[deploy]\ntarget = "local"\nauto = true\ncanary_percent = 50\ncanary_minutes = 1',
    )
    spec.write_text(text)
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_console.cli.main",
            "-w",
            str(root),
            "daemon",
            "--settle",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    client = DaemonClient(ws)
    try:
        while not client.available():
            time.sleep(0.1)
        print("first version: train and deploy (not timed) ...", flush=True)
        first = client.call("POST", "/jobs", json={"pipeline": "churn"})
        while ws.jobs.get(first["id"]).status not in ("succeeded", "failed"):
            time.sleep(0.5)
        assert ws.jobs.get(first["id"]).status == "succeeded", ws.jobs.logs(first["id"])
        endpoint = ws.deployments.get("churn").endpoint
        rows = json.loads(
            ws.data.read("churn")
            .drop(columns=["churned"])
            .head(2)
            .to_json(orient="records", date_format="iso")
        )
        stop, stats = threading.Event(), {"ok": 0, "failed": []}
        lock = threading.Lock()

        def load():
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post(endpoint + "/invocations", json={"dataframe_records": rows})
                        with lock:
                            if r.status_code == 200:
                                stats["ok"] += 1
                            else:
                                stats["failed"].append(r.status_code)
                    except httpx.HTTPError as exc:
                        with lock:
                            stats["failed"].append(repr(exc))
                    time.sleep(0.02)  # ~150 requests/s in all: steady traffic, not a stress test

        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        print("appending the next month to data/churn.csv ...", flush=True)
        t0 = time.time()
        new = root / "data" / "churn.csv.part"
        shutil.copy(root / "data" / "churn.csv", new)
        with open(new, "a") as out, open(root / "data" / "churn_2026_01.csv") as extra:
            next(extra)
            out.write(extra.read())
        new.rename(root / "data" / "churn.csv")
        served = None
        while time.time() - t0 < 300:
            v = httpx.get(endpoint + "/version", timeout=5).json()
            if v["version"] == 2 and v["canary"] is None:
                served = time.time()
                break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        chain = [j for j in ws.jobs.list(limit=20) if j.kind == "chain" and j.id != first["id"]]
        steps = sorted(ws.jobs.list(chain_id=chain[0].id), key=lambda s: s.id) if chain else []
        result = {
            "total_s": (served - t0) if served else None,
            "requests_ok": stats["ok"],
            "requests_failed": len(stats["failed"]),
            "failures": stats["failed"][:10],
            "trigger_delay_s": (chain[0].created_at - t0) if chain else None,
            "steps": {s.kind: s.seconds for s in steps},
            "chain": chain[0].detail if chain else None,
        }
    finally:
        for d in ws.deployments.list():
            ws.deployments.stop(d.name)
        daemon.terminate()
        daemon.wait(timeout=30)
        ws.close()
    print(f"\nnew file -> trigger (settle): {result['trigger_delay_s']:.1f} s")
    for k, v in result["steps"].items():
        print(f"  {k:9} {v:6.1f} s")
    total = result["total_s"]
    print(
        f"new file -> new version answering: {total:.1f} s (target < 30 s)"
        if total
        else "the new version never took over"
    )
    print(
        f"requests during the swap: {result['requests_ok']} ok, {result['requests_failed']} failed (target 0)"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "loop.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
