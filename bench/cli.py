"""Command speed: CPU time of each read-only `mlops` command vs a plain sqlite3 floor.

    make bench            # or: .venv/bin/python bench/cli.py [--workspace DIR] [-n 7]

Workload (issue 14, part 6): on the demo workspace (`mlops demo`, built in a temporary
folder unless --workspace names one), each read-only command runs N times in a fresh
process; its CPU time is user + sys of that child (os.wait4), the median of N. The floor
for each is a fresh `python -c` of the same interpreter that opens the registry with the
plain sqlite3 module and prints the same rows with a hand-written query: the cost of a
Python process that reads them, interpreter start included. `mlops --help` is a reference
line (no workspace is opened). Target: every read-only command under 150 ms of CPU.
Writes bench/results/cli.json. A benchmark: it exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_MS = 150.0
MLOPS = Path(sys.executable).with_name("mlops")

# Each floor reads what its command shows, from the registry at argv[1] (the model or
# dataset is argv[2]), and prints it.
_OPEN = """
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
"""
FLOORS = {
    "runs list": _OPEN
    + """
runs = con.execute(
    "SELECT r.id, e.name, r.name, r.status, r.start_time, r.end_time FROM run r "
    "JOIN experiment e ON e.id = r.experiment_id ORDER BY r.start_time DESC LIMIT 50"
).fetchall()
marks = ",".join("?" * len(runs))
metrics = con.execute(
    f"SELECT run_id, key, value FROM latest_metric WHERE run_id IN ({marks})",
    [r[0] for r in runs],
).fetchall()
print(*runs, *metrics, sep="\\n")
""",
    "models show churn": _OPEN
    + """
versions = con.execute(
    "SELECT version, status, created_at, run_id, metrics FROM model_version "
    "WHERE model_name = ? ORDER BY version",
    (sys.argv[2],),
).fetchall()
aliases = con.execute(
    "SELECT alias, version FROM model_alias WHERE model_name = ?", (sys.argv[2],)
).fetchall()
print(*versions, *aliases, sep="\\n")
""",
    "data versions churn": _OPEN
    + """
current = con.execute("SELECT current_version FROM dataset WHERE name = ?", (sys.argv[2],))
versions = con.execute(
    "SELECT version, status, rows, digest, report, lake_path, created_at "
    "FROM dataset_version WHERE dataset_name = ? ORDER BY version",
    (sys.argv[2],),
).fetchall()
print(current.fetchone(), *versions, sep="\\n")
""",
    "deployments list": _OPEN
    + """
found = con.execute(
    "SELECT name, target, model_name, version, canary_version, canary_percent, status, "
    "endpoint, updated_at FROM deployment ORDER BY name"
).fetchall()
print(*found, sep="\\n")
""",
    # without a daemon, `status` opens the workspace and looks for the daemon's socket
    "status": _OPEN
    + """
import os
schema = con.execute("SELECT version_num FROM alembic_version").fetchone()
print(schema, os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), "daemon.sock")))
""",
}


def cpu_ms(argv: list[str]) -> tuple[float, int, str]:
    """CPU time (user + sys) of one child process running argv, its exit code and stderr."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    return (usage.ru_utime + usage.ru_stime) * 1000, proc.returncode, tail


def median_ms(argv: list[str], n: int) -> tuple[float | None, str]:
    """Median CPU ms over n runs after one warm-up (bytecode and page cache); None if the
    command fails, with its error."""
    for i in range(n + 1):
        ms, rc, err = cpu_ms(argv)
        if rc != 0:
            return None, f"exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
        if i == 0:
            times: list[float] = []
        else:
            times.append(ms)
    return statistics.median(times), ""


def build_workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="cli-bench-")) / "ws"
    print(f"building a demo workspace in {root} (takes a minute) ...", flush=True)
    proc = subprocess.run([str(MLOPS), "demo", str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"`mlops demo` failed; no figures:\n{proc.stderr[-3000:]}")
        sys.exit(0)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workspace", type=Path, help="an existing demo workspace to reuse")
    ap.add_argument("-n", "--repeat", type=int, default=7, help="runs per command (median)")
    args = ap.parse_args()
    root = args.workspace.resolve() if args.workspace else build_workspace()
    registry = root / ".mlops" / "registry.db"
    if not registry.exists():
        print(f"{root} holds no workspace registry ({registry}); no figures.")
        sys.exit(0)

    # An installed package has its bytecode compiled (pip does it); an editable checkout
    # under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module in every run,
    # ~50 ms that no user pays.
    import compileall

    compileall.compile_dir(str(HERE.parent / "src"), quiet=1)
    print(f"workspace: {root}; CPU ms (user + sys), median of {args.repeat}\n", flush=True)
    print(f"{'command':28} {'ms CPU':>8} {'floor ms':>9} {'ratio':>7}  target < {TARGET_MS:.0f} ms")
    results: dict = {"workspace": str(root), "repeat": args.repeat, "target_ms": TARGET_MS}
    help_ms, err = median_ms([str(MLOPS), "--help"], args.repeat)
    results["mlops --help"] = {"ms": help_ms, "error": err or None}
    print(f"{'mlops --help (reference)':28} {help_ms or float('nan'):>8.1f}  {err}", flush=True)
    for command, floor_code in FLOORS.items():
        ms, err = median_ms([str(MLOPS), "-w", str(root), *command.split()], args.repeat)
        floor_argv = [sys.executable, "-c", floor_code, str(registry), "churn"]
        floor, floor_err = median_ms(floor_argv, args.repeat)
        ratio = ms / floor if ms and floor else None
        meets = ms is not None and ms < TARGET_MS
        results[command] = {
            "ms": ms,
            "floor_ms": floor,
            "ratio": ratio,
            "meets_target": meets,
            "error": err or floor_err or None,
        }
        print(
            f"{'mlops ' + command:28} {ms or float('nan'):>8.1f} {floor or float('nan'):>9.1f} "
            f"{f'{ratio:.1f}x' if ratio else '-':>7}  {'yes' if meets else 'NO'}"
            f"{'  ' + (err or 'floor ' + floor_err) if err or floor_err else ''}",
            flush=True,
        )
    missed = [c for c in FLOORS if not results[c]["meets_target"]]
    print(
        f"\nread-only commands under {TARGET_MS:.0f} ms of CPU: "
        f"{len(FLOORS) - len(missed)} of {len(FLOORS)}"
        + (f" (not yet: {', '.join(missed)})" if missed else "")
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "cli.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
