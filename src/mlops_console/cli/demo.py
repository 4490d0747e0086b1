"""mlops init | demo: a workspace from the sample, and the product's story on it.

`mlops demo DIR` tells the whole loop on the sample data, a line per step: ingest → train
→ register → deploy → traffic → the drifted month arrives → the drift alert opens → the
daemon retrains → canary → promotion → the alert resolves. Everything after the deploy is
the real machinery (the daemon, its monitoring, the alert rule's retrain action, the
chain's canary judge); the demo only plays the world: it drops January's file into the
data feed and sends January's customers to the model.

The demo's feed keeps the last two months in `data/churn/` (November and December; when
January lands, November moves to `data/archive/`): a rolling training window, so the model
retrained on it knows January's customers, and the drift alert can resolve (a model
retrained on the whole year would still see January as drifted: 5 of its 8 inputs). The
rule's threshold (a share above 0.4) sits where the sample's drift verdicts fall apart on
any few hundred rows: 0.5-0.625 against December's model, 0.125-0.375 against January's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.workspace_cmds import StageProgress, _print_result
from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.data.datasets import IngestResult
    from mlops_console.loadgen import TrafficReport
    from mlops_console.workspace import Workspace

MARKER = "demo-workspace"  # in .mlops/: this folder was made by `mlops demo` (safe to redo)
FEED_MONTHS = ("2025-11", "2025-12")
NEW_MONTH = "2026-01"
WAIT = 240.0  # seconds any one step may take before the demo gives up and says where to look
TRAFFIC_RATE, TRAFFIC_BATCH = 20.0, 5  # requests/s and rows per request: 100 rows/s

# The demo's own tuning of the sample workspace (the templates stay as `init --sample` has
# them): quick retrains, a canary judged in seconds, monitoring every 2 s over 20 s
# windows, and a drift alert whose action is a retrain.
PIPELINE_KEYS: dict[str, dict[str, str | None]] = {
    "search": {"profile": '"quick"'},
    "schedule": {"interval": None, "on_data_change": "false"},  # the alert retrains
    # a busy 2-core laptop: latency checks with room (the gates' metrics are unchanged)
    "checks": {"latency_p99_1row_ms": "200", "latency_p99_100rows_ms": "1000"},
    "deploy": {
        "auto": "true",
        "canary_percent": "50",
        "min_requests": "20",
        "canary_minutes": "2",
        "max_p99_ms": "1000",
    },
}
MONITORING = """
# Added by `mlops demo`: monitoring in seconds, so the story fits in minutes.
[monitoring]
every = "2s"
window = "20s"
min_rows = 400

[[alerts]]
name = "input drift"
measure = "drift_share"
above = 0.4
window = "20s"
action = "retrain"
notify = ["console", "log"]
"""


def _add_sample_dataset(ws: Workspace) -> IngestResult:
    """The sample's dataset, registered and ingested, so the sample pipeline runs as is."""
    if "churn" not in {d.name for d in ws.data.list()}:
        ws.data.add(
            "churn",
            "data/churn.csv",
            timestamp="event_time",
            entities=["customer_id"],
            description="Monthly customer snapshots",
        )
    return ws.data.ingest("churn")


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--sample", is_flag=True, help="Copy the sample data and a sample pipeline in.")
@click.option("--name", help="Workspace name (default: the folder's name).")
def init(directory: str, sample: bool, name: str | None) -> None:
    """Create a workspace in DIRECTORY (existing files are kept)."""
    from mlops_console.workspace import Workspace

    with Workspace.init(directory, sample=sample, name=name) as ws:
        click.echo(f"Workspace ready at {ws.root}")
        for sub in ("mlops.toml", "pipelines/", "features/", "data/", ".mlops/"):
            click.echo(f"  {sub}")
        if sample:
            result = _add_sample_dataset(ws)
            click.echo(
                f"Sample data in data/ ({result.message}), a pipeline in pipelines/churn.toml."
            )
            w = f"mlops -w {shlex.quote(directory)}"
            click.echo("Next:")
            click.echo(f"  {w} run churn --quick          # train, test, register churn/1")
            click.echo(f"  {w} deploy churn@champion      # serve it on 127.0.0.1")
            click.echo(f"  {w} deployments traffic churn  # send it 200 rows of its data")
            click.echo(f"  {w} console                    # see it all")
            click.echo(f"  {w} deployments stop churn     # stop serving")


# --- the demo's workspace ---------------------------------------------------------------


def set_keys(text: str, section: str, keys: dict[str, str | None]) -> str:
    """TOML text with `key = value` set (None: removed) in `[section]`, the rest as it was."""
    head = re.search(rf"^\[{re.escape(section)}\][^\n]*\n", text, re.M)
    if head is None:
        text = text.rstrip("\n") + f"\n\n[{section}]\n"
        head = re.search(rf"^\[{re.escape(section)}\][^\n]*\n", text, re.M)
        assert head is not None
    end = re.search(r"^\[", text[head.end() :], re.M)
    body_end = head.end() + (end.start() if end else len(text) - head.end())
    body = text[head.end() : body_end]
    for key, value in keys.items():
        line = re.compile(rf"^{re.escape(key)}\s*=.*\n?", re.M)
        if value is None:
            body = line.sub("", body)
        elif line.search(body):
            body = line.sub(f"{key} = {value}\n", body, count=1)
        else:
            body = f"{key} = {value}\n" + body
    return text[: head.end()] + body + text[body_end:]


def _tune(ws_root: Path) -> None:
    """The demo's settings in its own workspace (see PIPELINE_KEYS and MONITORING)."""
    spec = ws_root / "pipelines" / "churn.toml"
    text = spec.read_text()
    for section, keys in PIPELINE_KEYS.items():
        text = set_keys(text, section, keys)
    spec.write_text(text)
    settings = ws_root / "mlops.toml"
    text = set_keys(settings.read_text(), "serving", {"predlog_rotate": "1"})
    settings.write_text(text + MONITORING)


def _feed(root: Path) -> None:
    """data/churn/: one file per month of the last two, cut from the sample's year."""
    lines = (root / "data" / "churn.csv").read_text().splitlines(keepends=True)
    head, rows = lines[0], lines[1:]
    feed = root / "data" / "churn"
    feed.mkdir(exist_ok=True)
    for month in FEED_MONTHS:
        part = "".join(r for r in rows if r.split(",", 2)[1].startswith(month))
        (feed / f"{month}.csv").write_text(head + part)


def _new_month_lands(root: Path) -> None:
    """January's export lands in the feed and November, the oldest month, is archived."""
    feed, archive = root / "data" / "churn", root / "data" / "archive"
    archive.mkdir(exist_ok=True)
    landing = feed / f".{NEW_MONTH}.csv.part"  # written whole, then renamed: never half a file
    shutil.copy(root / "data" / "churn_2026_01.csv", landing)
    landing.rename(feed / f"{NEW_MONTH}.csv")
    shutil.move(feed / f"{FEED_MONTHS[0]}.csv", archive / f"{FEED_MONTHS[0]}.csv")


def _fresh(directory: str, say: Callable[[str], None]) -> None:
    """An earlier demo's folder is stopped and removed; any other folder is left alone."""
    root = Path(directory)
    if not root.exists() or not any(root.iterdir()):
        return
    if not (root / ".mlops" / MARKER).exists():
        raise MlopsError(
            f"{directory} exists and was not made by `mlops demo`; give another folder "
            f"(`mlops demo OTHER`) or remove it first."
        )
    from mlops_console.automation import lifecycle
    from mlops_console.workspace import Workspace

    say(f"{directory} is an earlier demo: stopping its daemon and deployments, starting afresh")
    lifecycle.stop(root)
    with Workspace.open(root) as ws:
        for dep in ws.deployments.list():
            if dep.running:
                ws.deployments.stop(dep.name)
    shutil.rmtree(root)


def wait_for(what: str, check: Callable[[], Any], hint: str, seconds: float = WAIT) -> Any:
    """Poll `check` until it returns something true; an error saying where to look if not."""
    deadline = time.monotonic() + seconds
    pause = 0.2
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise MlopsError(f"The demo waited {seconds:.0f} s for {what} in vain; {hint}.")
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)


class Traffic:
    """January's customers calling the model, in the background, until stopped."""

    def __init__(self, ws: Workspace, path: Path) -> None:
        from mlops_console.loadgen import send_traffic

        self.stop, self.report = threading.Event(), None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.report = send_traffic(
                    ws,
                    "churn",
                    path=path,
                    seconds=WAIT * 4,
                    rate=TRAFFIC_RATE,
                    batch=TRAFFIC_BATCH,
                    stop=self.stop,
                )
            except BaseException as exc:  # reported by the demo when it ends
                self.error = exc

        self.thread = threading.Thread(target=run, name="demo-traffic", daemon=True)
        self.thread.start()

    def end(self) -> TrafficReport | None:
        self.stop.set()
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.report


@click.command()
@click.argument("directory", default="mlops-demo", type=click.Path(file_okay=False))
def demo(directory: str) -> None:
    """Tell the whole loop on the sample data in DIRECTORY, a line per step.

    Ingest, train, register, deploy, send traffic; then January's drifted data arrives,
    the drift alert opens, the daemon retrains, the new version goes out as a canary, is
    promoted, and the alert resolves. The deployment and the daemon keep running.
    """
    # one OpenMP thread per fit: on a busy 2-core machine, scikit-learn's boosting with a
    # thread per core spins against the other processes (minutes instead of seconds); the
    # daemon and its chains inherit it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mlops_console.automation import lifecycle
    from mlops_console.workspace import Workspace

    progress = StageProgress(total=12)
    w = f"mlops -w {shlex.quote(directory)}"
    _fresh(directory, lambda s: progress("  " + s))
    progress(f"create workspace {directory}: the sample data, a pipeline, a drift alert rule")
    with Workspace.init(directory, sample=True) as ws:
        (ws.state / MARKER).write_text("made by `mlops demo`; running it again starts afresh\n")
        _tune(ws.root)
        _feed(ws.root)
    with Workspace.open(directory) as ws:
        progress("ingest data/churn/ (November and December 2025) as dataset churn")
        ws.data.add(
            "churn",
            "data/churn/*.csv",
            timestamp="event_time",
            entities=["customer_id"],
            description="Monthly customer snapshots: the feed keeps the last two months",
        )
        progress("  " + ws.data.ingest("churn").message)
        progress("train churn (quick profile: a small search, checks, gates)")
        result = ws.pipelines.run("churn", stage=lambda s: progress("  " + s.strip()))
        mv = result.version
        if mv is None or not result.gates.get("passed"):
            _print_result(ws, result)
            raise MlopsError("The first model did not pass its gates; see the checks above.")
        progress(
            f"register {mv.ref}: gates passed, it is @champion "
            f"(holdout roc_auc {result.metrics.get('holdout_roc_auc', float('nan')):.3f})"
        )
        dep = ws.deployments.deploy("churn@champion")
        progress(f"deploy churn@champion: v{dep.version} serving at {dep.endpoint}")
        lifecycle.start(ws, settle=1.0)
        progress("  the daemon runs: monitoring every 2 s, the alert rule, the job queue")
        from mlops_console.loadgen import send_traffic

        calm = send_traffic(ws, "churn", requests=60, rate=TRAFFIC_RATE, batch=TRAFFIC_BATCH)
        progress(f"traffic: December's customers, {calm.summary()}")
        _new_month_lands(ws.root)
        traffic = Traffic(ws, ws.root / "data" / "churn" / f"{NEW_MONTH}.csv")
        try:
            _loop(ws, progress, w)
        finally:
            report = traffic.end()
        if report is not None:
            click.echo(f"\nJanuary's traffic through the swap: {report.summary()}")
    click.echo(
        f"\nOpen it:  {w} console\n"
        f"Explore:  {w} alerts list  |  {w} jobs list --steps  |  {w} models history churn\n"
        f"Stop it:  {w} down && {w} deployments stop churn"
    )


def _loop(ws: Workspace, progress: StageProgress, w: str) -> None:
    """From January's arrival to the alert resolved: each step waits on the real state."""
    progress(
        f"the drifted month arrives: data/churn/{NEW_MONTH}.csv lands (November is archived) "
        "and January's customers call the model"
    )
    alert = wait_for(
        "the drift alert",
        lambda: next(iter(ws.alerts.list("active", "churn")), None),
        f"`{w} monitor show churn` shows what monitoring measures",
    )
    progress(f"the drift alert opens: {alert.rule} #{alert.id}, {alert.detail}")

    def chain():
        chains = [j for j in ws.jobs.list(limit=20) if j.kind == "chain"]
        return chains[0] if chains else None

    job = wait_for("the retrain chain", chain, f"`{w} alerts show {alert.id}` says what it did")
    steps_hint = f"`{w} jobs show {job.id}` and `{w} jobs logs {job.id}` say why"

    def trained():
        j = ws.jobs.get(job.id)
        if j.status in ("failed", "cancelled"):
            raise MlopsError(f"The retrain chain {job.id} stopped: {j.detail}; see {steps_hint}.")
        done = [s for s in ws.jobs.list(chain_id=job.id) if s.kind == "train" and s.ended_at]
        return done[0] if done else None

    progress(f"the daemon retrains: chain {job.id} ({job.trigger}) ingests the feed and trains")
    step = wait_for("the retrain", trained, steps_hint)
    progress("  " + (step.detail or "trained"))

    def canary():
        if ws.jobs.get(job.id).status in ("failed", "cancelled"):
            trained()  # raises with the chain's reason
        return next((e for e in ws.deployments.history("churn") if e.action == "canary"), None)

    event = wait_for("the canary", canary, steps_hint)
    progress(
        f"canary: v{event.to_version} takes {ws.deployments.get('churn').canary_percent:g}% "
        "of the traffic, judged on its errors and latency"
    )

    def promoted():
        canary()
        d = ws.deployments.get("churn")
        return d.version == event.to_version and d.canary_version is None and d

    d = wait_for("the promotion", promoted, steps_hint)
    champion = ws.models.resolve("churn@champion")
    progress(
        f"promotion: v{d.version} serves all traffic and is churn@champion (v{champion.version})"
    )

    def resolved():
        a = ws.alerts.get(alert.id)
        return a.state == "resolved" and a

    done = wait_for("the alert to resolve", resolved, f"`{w} monitor show churn` shows the drift")
    progress(
        f"the drift alert resolves: {done.measure} = {done.value:.2f} against v{d.version}'s training data"
    )


COMMANDS: list[click.Command] = [init, demo]
