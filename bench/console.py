"""Console speed with a big workspace: 10,000 runs, 1,000 model versions, 100,000 jobs and
three real local deployments with some thousands of requests each in their prediction logs.

    make bench            # or: .venv/bin/python bench/console.py [--reps 3] [--no-ssh]
    .venv/bin/python bench/console.py --profile      # what grows with the terminal size

Measures, each cold start in a new process in a real terminal (tmux, `new-session -x W -y H`,
the screen read with `capture-pane` every 20 ms), median of `--reps` (3):

cold start    `mlops -w WS console` until the first frame (the title painted) and until the
              Overview's table is filled, at 80x24 and 160x48, first without deployments
              (the registry, runs and jobs only), then with them, where it also waits for
              the Overview's figures (a number in each deployment's row: its window
              measured).
ssh           the same, the console started through `ssh -tt` to a real sshd on a loopback
              port (a temporary host key and authorized key; the handshake counts).
screens       in-process (Textual's Pilot, 160x48): from switching to each screen until its
              table is filled (median of 3, each from an idle console), the time until a
              screen with a warm-up has settled, the time to filter, and two switches made
              while the Overview's warm-up runs; the max of the medians is the figure.

Targets: first frame < 1 s, Overview filled < 1 s, every screen switch < 200 ms.
Writes bench/results/console.json; bench/console_results.md has a run's figures.
`--profile` instead runs the console in tmux at 80x24 and 160x48 until its first screen
is filled, and prints the phases of the cold start and the time spent in layout,
rendering, CSS, writing frames and garbage collection, as it is and with gc.freeze().
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLOPS = Path(sys.executable).parent / "mlops"
SIZES = ((80, 24), (160, 48))
DEPLOYMENTS = ("svc-a", "svc-b", "svc-c")
REQUESTS = 2_000  # per deployment, 5 rows each
WAIT_S = 30  # the longest one cold start may take before it counts as failed
POLL_S = 0.02
TARGET_S = 1.0
TARGET_SWITCH_MS = 200.0
# readline (and so pytest, an interactive parent) exports COLUMNS/LINES, which Textual
# would believe over the terminal's size
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


# --- the workspace ---------------------------------------------------------------------------


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
    print(
        f"seeded 10,000 runs, 1,000 versions, 100,000 jobs in {time.time() - t:.1f} s", flush=True
    )


def seed_deployments(root: Path) -> dict:
    """A small model trained by a pipeline, served by three local deployments, each sent
    REQUESTS requests over HTTP; their prediction logs collected, as the daemon does."""
    import httpx
    import numpy as np
    import pandas as pd

    from mlops_console.training.runner import train
    from mlops_console.workspace import Workspace

    t = time.time()
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame({"x1": rng.normal(size=n).round(4), "x2": rng.normal(size=n).round(4)})
    frame["ts"] = pd.date_range("2026-01-01", periods=n, freq="min")
    frame["y"] = (frame["x1"] + rng.normal(0, 0.5, n) > 0).astype(int)
    ws = Workspace.open(root)
    frame.to_parquet(root / "data" / "svc.parquet")
    ws.data.add("svc", "data/svc.parquet", timestamp="ts")
    ws.data.ingest("svc")
    (root / "pipelines" / "svc.toml").write_text(
        'name = "svc"\nregister_as = "svc"\n[data]\ndataset = "svc"\ntarget = "y"\n'
        'time_column = "ts"\n[model]\nestimator = "sklearn.linear_model.LogisticRegression"\n'
        '[gates]\nchecks = ["signature"]\nauto_promote = true\n'
    )
    train(ws, "svc")
    # segments close (and so can be collected) a second after their last write
    os.environ["MLOPS_PREDLOG_ROTATE"] = "1"
    endpoints = {name: ws.deployments.deploy("svc/1", name=name).endpoint for name in DEPLOYMENTS}
    rows = frame[["x1", "x2"]].to_dict("records")
    sent: dict[str, int] = {}

    def traffic(name: str, url: str) -> None:
        ok = 0
        with httpx.Client(timeout=30) as client:
            for i in range(REQUESTS):
                body = {"dataframe_records": rows[(i * 5) % (n - 5) : (i * 5) % (n - 5) + 5]}
                ok += client.post(url + "/invocations", json=body).status_code == 200
        sent[name] = ok

    threads = [threading.Thread(target=traffic, args=kv) for kv in endpoints.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    deadline = time.time() + 60
    measured = dict.fromkeys(DEPLOYMENTS, 0)
    while time.time() < deadline and min(measured.values()) < REQUESTS * 5:
        time.sleep(1)
        ws.monitor.collect()
        for name in DEPLOYMENTS:
            measured[name] = ws.monitor.measure(name, collect_first=False).rows
    ws.close()
    print(
        f"3 deployments, {sum(sent.values())} requests answered, rows in their windows "
        f"{measured}, in {time.time() - t:.1f} s",
        flush=True,
    )
    return {"requests_ok": sent, "window_rows": measured}


def stop_deployments(root: Path) -> None:
    from mlops_console.workspace import Workspace

    ws = Workspace.open(root)
    for name in DEPLOYMENTS:
        with contextlib.suppress(Exception):  # one that did not start has nothing to stop
            ws.deployments.stop(name)
    ws.close()


# --- a real terminal -------------------------------------------------------------------------


class Tmux:
    """A tmux server of our own (its own socket), started before any measure so that a
    cold start never includes tmux's own start."""

    def __init__(self) -> None:
        self.tmux = shutil.which("tmux") or _install("tmux", "tmux")
        self.base = [self.tmux, "-L", f"mlops-bench-{os.getpid()}"]
        self.run("new-session", "-d", "-s", "keep", "-x", "20", "-y", "5", "sleep 86400")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.base + list(args), capture_output=True, text=True, env=CLEAN_ENV)

    def screen(self, session: str) -> str:
        return self.run("capture-pane", "-t", session, "-p").stdout

    def alive(self, session: str) -> bool:
        return self.run("has-session", "-t", session).returncode == 0

    def close(self) -> None:
        self.run("kill-server")


def _install(package: str, binary: str) -> str:
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            f"apt-get install -y -qq {package} >/dev/null 2>&1 || "
            f"(apt-get update -qq && apt-get install -y -qq {package}) >/dev/null 2>&1",
            shell=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    found = shutil.which(binary) or (binary if os.access(binary, os.X_OK) else None)
    if not found:
        raise SystemExit(f"{binary} is needed: install {package}")
    return found


def _line(text: str, word: str) -> str:
    pattern = re.compile(rf"(?<![\w/-]){re.escape(word)}(?![\w/-])")
    return next((ln for ln in text.splitlines() if pattern.search(ln)), "")


def _figure(line: str, name: str) -> bool:
    """A measured figure in a deployment's row: a number (not "v1", not "...")."""
    rest = line.split(name, 1)[-1]
    return "..." not in rest and bool(re.search(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", rest))


def cold_start(tmux: Tmux, cmd: str, size: tuple[int, int], deployments: tuple[str, ...]) -> dict:
    """One cold start of `cmd` in a new tmux session: seconds to the first frame, to the
    Overview filled (the model rows and each deployment's row) and to each deployment's
    figures; None for what did not show within WAIT_S."""
    session = f"c{time.time_ns()}"
    w, h = size
    out: dict[str, float | None] = {"first_frame_s": None, "filled_s": None, "figures_s": None}
    t0 = time.perf_counter()
    tmux.run("new-session", "-d", "-s", session, "-x", str(w), "-y", str(h), cmd)
    text = ""
    try:
        while time.perf_counter() - t0 < WAIT_S:
            text = tmux.screen(session)
            now = time.perf_counter() - t0
            if out["first_frame_s"] is None and "mlops-console" in text:
                out["first_frame_s"] = now
            if out["filled_s"] is None and all(
                _line(text, word) for word in ("model0", *deployments)
            ):
                out["filled_s"] = now
            if out["filled_s"] is not None and not deployments:
                break
            if out["filled_s"] is not None and all(_figure(_line(text, d), d) for d in deployments):
                out["figures_s"] = now
                break
            time.sleep(POLL_S)
    finally:
        tmux.run("send-keys", "-t", session, "q")
        deadline = time.time() + 10
        while tmux.alive(session) and time.time() < deadline:
            time.sleep(0.1)
        tmux.run("kill-session", "-t", session)
    if out["filled_s"] is None or (deployments and out["figures_s"] is None):
        out["last_screen"] = text  # type: ignore[assignment]  # what it showed instead
    return out


def cold_starts(tmux: Tmux, cmd: str, reps: int, deployments: tuple[str, ...]) -> dict:
    result = {}
    for w, h in SIZES:
        samples = [cold_start(tmux, cmd, (w, h), deployments) for _ in range(reps)]
        entry: dict = {
            "samples": [{k: v for k, v in s.items() if k != "last_screen"} for s in samples]
        }
        for k in ("first_frame_s", "filled_s", "figures_s"):
            got = [s[k] for s in samples if s[k] is not None]
            entry[k] = statistics.median(got) if len(got) == reps else None
        failed = next((s.get("last_screen") for s in samples if s["filled_s"] is None), None)
        if failed:
            entry["a_failed_screen"] = failed
        result[f"{w}x{h}"] = entry
    return result


# --- ssh -------------------------------------------------------------------------------------


class NoSsh(Exception):
    """No sshd here (and none can be installed), or it did not start."""


@contextlib.contextmanager
def sshd(tmp: Path) -> Iterator[list[str]]:
    """A real sshd on a loopback port, for this user with a temporary key; yields the ssh
    command line (up to the remote command). Stopped by its pid after."""
    daemon = "/usr/sbin/sshd"
    if not os.access(daemon, os.X_OK):
        try:
            _install("openssh-server openssh-client", daemon)
        except SystemExit as exc:
            raise NoSsh(str(exc)) from None
    d = tmp / "ssh"
    d.mkdir(mode=0o700)
    for key in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True
        )
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    version = re.search(
        r"OpenSSH_(\d+)\.(\d+)",
        subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr,
    )
    newer = version is not None and (int(version[1]), int(version[2])) >= (9, 8)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
        + ("PerSourcePenalties no\n" if newer else "")
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation dir
    with open(d / "sshd.log", "w") as log:  # sshd keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [daemon, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)], stderr=log
        )
    try:
        deadline = time.time() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise NoSsh(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield [
            "ssh", "-tt", "-p", str(port), "-i", str(d / "client"),
            "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", f"{getpass.getuser()}@127.0.0.1",
        ]  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- screens, in-process -----------------------------------------------------------------------


async def screens(root: Path) -> dict:
    """Each screen switch in-process at 160x48 (median and worst of 3, each from an idle
    console: no load or warm-up running), the time until a screen with a warm-up
    (measuring windows) has settled, the filter, and two switches made while the
    Overview's warm-up measures its windows (a user moving on as it starts)."""
    from textual.worker import WorkerState

    from mlops_console.tui.app import MlopsConsole, tune_gc
    from mlops_console.tui.areas import AREAS
    from mlops_console.workspace import Workspace

    app = MlopsConsole(Workspace.open(root), poll_seconds=3600, live=False)
    tune_gc()  # as `mlops console` runs it

    async def filled(pilot, seconds: float = WAIT_S) -> None:
        deadline = time.perf_counter() + seconds
        while app.listing is None:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{app.area.name} not filled in {seconds} s")
            await pilot.pause(0.002)

    async def idle(pilot, seconds: float = 60) -> None:
        deadline = time.perf_counter() + seconds
        while app._warming or any(
            w.group in ("load", "warm") and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
            for w in app.workers
        ):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{app.area.name}: still loading after {seconds} s")
            await pilot.pause(0.01)

    async def switch(pilot, name: str) -> float:
        app.listing = None
        t = time.perf_counter()
        app.show_area(name)
        await filled(pilot)
        await pilot.pause()  # the table painted
        return (time.perf_counter() - t) * 1000

    out: dict = {}
    async with app.run_test(size=(160, 48)) as pilot:
        await filled(pilot)
        await idle(pilot)
        for area in list(AREAS):
            samples = []
            for _ in range(3):
                await idle(pilot)
                t = time.perf_counter()
                samples.append(await switch(pilot, area.name))
            await idle(pilot)
            settled = (time.perf_counter() - t) * 1000 if area.warm is not None else None
            rows = app.query_one("#table").row_count
            app.listing = None
            t = time.perf_counter()
            app.apply_filter("1")  # what `/` does: in memory, or a load of an area paging
            await filled(pilot)
            await pilot.pause()
            out[area.name] = {
                "first_page_ms": statistics.median(samples),
                "worst_ms": max(samples),
                "settled_ms": settled,
                "rows_shown": rows,
                "filter_ms": (time.perf_counter() - t) * 1000,
            }
            await idle(pilot)
            app.apply_filter("")
            await idle(pilot)
        during = {}
        for name in ("runs", "models"):
            await idle(pilot)
            await asyncio.sleep(2.5)  # the Overview's windows are no longer fresh
            await switch(pilot, "overview")
            deadline = time.perf_counter() + WAIT_S  # until its warm-up measures (0.3 s on)
            while not any(
                w.group == "warm" and w.state == WorkerState.RUNNING for w in app.workers
            ):
                if time.perf_counter() > deadline:
                    raise TimeoutError("the Overview's warm-up did not start")
                await pilot.pause(0.005)
            during[name] = await switch(pilot, name)
        await idle(pilot)
    return {"screens": out, "during_warmup_ms": during}


# --- what grows with the terminal size -------------------------------------------------------

# Run in tmux at each size: the console until its first screen is filled, then it exits.
# Marks the phases of the cold start and times, without a profiler (cProfile blames a
# garbage collection on whatever allocated last), the parts that may grow with the size:
# layout and rendering (Screen._refresh_layout, Compositor.render_update), each widget's
# lines (StylesCache.render_widget, by widget), CSS (Stylesheet.update_nodes), the write of
# the frames (App._display), and the garbage collections (gc.callbacks). PROBE_GC=freeze:
# gc.freeze() once the workspace is open, the fix suggested in console_results.md.
PROBE = """
import gc, os, sys, time
t0 = time.perf_counter()
marks, timers = {}, {}
def mark(k):
    marks.setdefault(k, time.perf_counter() - t0)
def add(key, seconds):
    c, s = timers.get(key, (0, 0.0))
    timers[key] = (c + 1, s + seconds)
def timed(cls, name, key=None):
    orig = getattr(cls, name)
    def wrapper(self, *a, **k):
        t = time.perf_counter()
        try:
            return orig(self, *a, **k)
        finally:
            add(key(self, *a) if key else f"{cls.__name__}.{name}", time.perf_counter() - t)
    setattr(cls, name, wrapper)
from textual._compositor import Compositor
from textual._styles_cache import StylesCache
from textual.app import App
from textual.css.stylesheet import Stylesheet
from textual.screen import Screen
timed(Screen, "_refresh_layout")
timed(Compositor, "render_update")
timed(Stylesheet, "update_nodes")
timed(App, "_display")
timed(StylesCache, "render_widget", lambda self, w, *a: "lines of " + type(w).__name__)
from mlops_console.tui.app import MlopsConsole
from mlops_console.workspace import Workspace
mark("imported")
ws = Workspace.open(sys.argv[1])
ws.config
mark("workspace opened")
gc_start = {}
def on_gc(phase, info):
    if phase == "start":
        gc_start["t"] = time.perf_counter()
    else:
        add(f"gc generation {info['generation']}", time.perf_counter() - gc_start["t"])
gc.callbacks.append(on_gc)
if os.environ.get("PROBE_GC") == "freeze":
    gc.freeze()

class Probe(MlopsConsole):
    def compose(self):
        mark("compose")
        yield from super().compose()
    def _display(self, screen, renderable):
        super()._display(screen, renderable)
        if renderable is not None:
            mark("first frame")
    def on_ready(self):
        self.set_interval(0.005, self._probe)
    def _probe(self):
        if self.listing is not None and "filled" not in marks:
            mark("filled")
            marks["timers"] = dict(timers)
            self.set_timer(0.1, self.exit)
app = Probe(ws, poll_seconds=3600, live=False)
mark("MlopsConsole()")
app.run()
open(sys.argv[2], "w").write(repr(marks))
"""
PHASES = ("imported", "workspace opened", "MlopsConsole()", "compose", "first frame", "filled")


def _probe(tmux: Tmux, root: Path, size: tuple[int, int], out: Path, gc_mode: str) -> dict:
    import ast

    script = out.with_suffix(".py")
    script.write_text(PROBE)
    session = f"p{time.time_ns()}"
    cmd = f"env -u COLUMNS -u LINES PROBE_GC={gc_mode} {sys.executable} {script} {root} {out}"
    tmux.run("new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]), cmd)
    deadline = time.time() + 60
    while tmux.alive(session) and time.time() < deadline:
        time.sleep(0.1)
    tmux.run("kill-session", "-t", session)
    return ast.literal_eval(out.read_text())


def profile(root: Path, tmp: Path, reps: int) -> dict:
    """What grows with the terminal size at cold start, in a real terminal: the phases and
    the timed parts until the first screen is filled, median of `reps` runs per size (the
    sizes alternate), as the console is and with gc.freeze()."""
    tmux = Tmux()
    runs: dict[str, list[dict]] = {}
    try:
        for i in range(reps):
            for gc_mode in ("default", "freeze"):
                for w, h in SIZES:
                    out = tmp / f"probe-{gc_mode}-{w}x{h}-{i}"
                    got = _probe(tmux, root, (w, h), out, gc_mode)
                    runs.setdefault(f"{w}x{h} gc {gc_mode}", []).append(got)
    finally:
        tmux.close()
    result: dict = {}
    for name, rs in runs.items():
        keys = {k for r in rs for k in r["timers"]}
        result[name] = {
            "phases_s": {p: statistics.median(r[p] for r in rs) for p in PHASES},
            "ms": {
                k: statistics.median(r["timers"].get(k, (0, 0.0))[1] * 1000 for r in rs)
                for k in sorted(keys)
            },
            "calls": {
                k: statistics.median(r["timers"].get(k, (0, 0.0))[0] for r in rs)
                for k in sorted(keys)
            },
        }
    names = list(result)
    print(f"\ncold start in tmux, median of {reps}: seconds since the process started")
    print(f"  {'':28}" + "".join(f"{n:>22}" for n in names))
    for p in PHASES:
        print(f"  {p:28}" + "".join(f"{result[n]['phases_s'][p]:22.3f}" for n in names))
    print("\nms spent until the first screen is filled (calls)")
    keys = sorted(
        {k for n in names for k in result[n]["ms"]}, key=lambda k: -result[names[1]]["ms"].get(k, 0)
    )
    for k in keys:
        if max(result[n]["ms"].get(k, 0) for n in names) < 2:
            continue
        cells = "".join(
            f"{result[n]['ms'].get(k, 0):14.1f} ({result[n]['calls'].get(k, 0):4.0f})"
            for n in names
        )
        print(f"  {k[:28]:28}{cells}")
    return result


# --- the run -------------------------------------------------------------------------------------


def _fmt(v: float | None, unit: str = "s") -> str:
    return "  -  " if v is None else (f"{v:5.2f}" if unit == "s" else f"{v:6.1f}")


def report(result: dict) -> None:
    def table(title: str, part: dict) -> None:
        print(f"\n{title}")
        print(f"  {'size':8} {'first frame':>12} {'Overview filled':>16} {'figures':>9}")
        for size, r in part.items():
            print(
                f"  {size:8} {_fmt(r['first_frame_s']):>12} {_fmt(r['filled_s']):>16} "
                f"{_fmt(r['figures_s']):>9}"
            )

    print(f"\ntargets: first frame < {TARGET_S:.0f} s, Overview filled < {TARGET_S:.0f} s, "
          f"screen switch < {TARGET_SWITCH_MS:.0f} ms (medians of {result['reps']}, seconds)")  # fmt: skip
    table("cold start, no deployments:", result["cold_no_deployments"])
    table("cold start, 3 deployments:", result["cold"])
    if result.get("ssh"):
        table("over ssh (loopback sshd, handshake included), 3 deployments:", result["ssh"])
    print(
        f"\n{'screen (160x48)':16} {'switch (ms)':>12} {'worst (ms)':>11} {'settled (ms)':>13} "
        f"{'rows':>6} {'filter (ms)':>12}"
    )
    for name, r in result["screens"].items():
        settled = "-" if r["settled_ms"] is None else f"{r['settled_ms']:.0f}"
        print(
            f"{name:16} {r['first_page_ms']:12.1f} {r['worst_ms']:11.1f} {settled:>13} "
            f"{r['rows_shown']:6d} {r['filter_ms']:12.1f}"
        )
    if result.get("during_warmup_ms"):
        print(
            "switches while the Overview's warm-up runs: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in result["during_warmup_ms"].items())
        )
    if result.get("screens_failed"):
        print(f"screens not measured: {result['screens_failed']}")
    if result.get("ssh_skipped"):
        print(f"ssh not measured: {result['ssh_skipped']}")
    if result["max_switch_ms"] is not None:
        print(
            f"max screen switch: {result['max_switch_ms']:.1f} ms (target < {TARGET_SWITCH_MS:.0f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-ssh", action="store_true", help="skip the measures over ssh")
    ap.add_argument("--profile", action="store_true", help="profile 80x24 vs 160x48 only")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    root = tmp / "ws"
    started = time.time()
    try:
        seed(root)
        if a.profile:
            result = profile(root, tmp, a.reps)
            (HERE / "results").mkdir(exist_ok=True)
            (HERE / "results" / "console_profile.json").write_text(json.dumps(result, indent=2))
            return
        tmux = Tmux()
        cmd = f"env -u COLUMNS -u LINES {MLOPS} -w {root} console"
        try:
            result: dict = {"reps": a.reps, "machine_load_at_start": os.getloadavg()[0]}
            result["cold_no_deployments"] = cold_starts(tmux, cmd, a.reps, ())
            result["deployments"] = seed_deployments(root)
            result["cold"] = cold_starts(tmux, cmd, a.reps, DEPLOYMENTS)
            if not a.no_ssh:
                try:
                    with sshd(tmp) as ssh:
                        line = " ".join([*ssh, cmd])
                        result["ssh"] = cold_starts(tmux, line, a.reps, DEPLOYMENTS)
                except NoSsh as exc:  # measured where it can be; said, never hidden
                    result["ssh_skipped"] = str(exc)
            try:
                result.update(asyncio.run(screens(root)))
            except Exception as exc:  # the cold starts are still worth their file
                result["screens_failed"] = f"{type(exc).__name__}: {exc}"
                result["screens"] = {}
        finally:
            tmux.close()
            stop_deployments(root)
        switches = [r["first_page_ms"] for r in result["screens"].values()]
        result["max_switch_ms"] = max(switches) if switches else None
        result["bench_seconds"] = time.time() - started
        report(result)
        for part in ("cold_no_deployments", "cold", "ssh"):
            for size, r in result.get(part, {}).items():
                if r.get("a_failed_screen"):
                    print(f"\n{part} {size}: not filled within {WAIT_S} s; the screen was:")
                    print(r["a_failed_screen"])
        print(f"\nbench took {result['bench_seconds']:.0f} s")
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "console.json").write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
