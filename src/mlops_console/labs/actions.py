"""What a scenario's steps do, each through the Workspace API (the same calls the CLI
makes), so a setup, an injection and a reference solution act on the real workspace."""

from __future__ import annotations

import csv
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import ConfigError, MlopsError
from mlops_console.labs import spec
from mlops_console.names import inside

if TYPE_CHECKING:
    from mlops_console.labs.spec import Scenario
    from mlops_console.labs.state import LabState
    from mlops_console.workspace import Workspace


def resolve_version(ws: Workspace, model: str, version: int | str, state: LabState) -> int:
    """A step's or checker's version: a number, `latest`, or `$name` a step remembered."""
    if isinstance(version, int):
        return version
    if version == "latest":
        found = ws.models.versions(model)
        if not found:
            raise MlopsError(f"Model {model!r} has no version yet.")
        return max(v.version for v in found)
    if version.startswith("$"):
        if version[1:] not in state.vars:
            raise MlopsError(
                f"The lab has not remembered {version} yet (a timeline step sets it); "
                "`mlops lab reset` starts the scenario again."
            )
        return int(state.vars[version[1:]])
    raise ConfigError(f"Version {version!r}: give a number, 'latest' or '$name'.")


def _file(ws: Workspace, relative: str) -> Path:
    return inside(ws.root, relative)


def _asset(scenario: Scenario, name: str) -> Path:
    path = inside(scenario.assets_dir, name)
    if not path.is_file():
        raise ConfigError(f"{scenario.path}: asset {name!r} is not in {scenario.assets_dir}.")
    return path


def run_step(ws: Workspace, scenario: Scenario, state: LabState, step: Any) -> str:
    """Do one step; returns what it did, in words, for the event timeline."""
    match step:
        case spec.CopyStep():
            dest = _file(ws, step.to)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_asset(scenario, step.asset), dest)
            return f"{step.to} landed"
        case spec.EditStep():
            path = _file(ws, step.file)
            text = path.read_text()
            new, n = re.subn(step.replace, step.by, text, flags=re.MULTILINE)
            if n == 0:
                raise MlopsError(f"{step.file} has no text matching {step.replace!r}.")
            path.write_text(new)
            return f"{step.file} edited ({n} change(s))"
        case spec.DropRowsStep():
            return _drop_rows(_file(ws, step.file), step.column, step.value)
        case spec.AddDatasetStep():
            if step.name not in {d.name for d in ws.data.list()}:
                ws.data.add(
                    step.name, step.source, timestamp=step.timestamp, entities=step.entities
                )
            return ws.data.ingest(step.name).message
        case spec.IngestStep():
            return ws.data.ingest(step.dataset, force=step.force).message
        case spec.TrainStep():
            result = ws.pipelines.run(step.pipeline, overrides=step.set, promote=step.promote)
            if step.remember:
                state.vars[step.remember] = result.version.version
            aliases = ", ".join(result.aliases) or "no alias"
            return f"{step.pipeline} trained: {result.version.ref} ({aliases})"
        case spec.PromoteStep():
            version = resolve_version(ws, step.model, step.version, state)
            ws.models.set_alias(step.model, step.alias, version, reason=step.reason)
            return f"{step.model}/{version} is @{step.alias}"
        case spec.RollbackModelStep():
            move = ws.models.rollback(step.model, step.alias, reason=step.reason)
            return f"{step.model}@{step.alias} back to v{move.to_version}"
        case spec.DeployStep():
            rec = ws.deployments.deploy(
                step.ref,
                name=step.name,
                strategy=step.strategy,
                canary_percent=step.canary_percent,
            )
            if step.strategy == "canary":
                return f"{rec.name}: v{rec.canary_version} is a canary ({step.canary_percent}%)"
            return f"{rec.name} serves v{rec.version} at {rec.endpoint}"
        case spec.RollbackDeploymentStep():
            rec = ws.deployments.rollback(step.deployment, reason=step.reason)
            return f"{rec.name} rolled back: v{rec.version} serves"
        case spec.PromoteDeploymentStep():
            rec = ws.deployments.promote(step.deployment, reason=step.reason)
            return f"{rec.name}: v{rec.version} promoted"
        case spec.JudgeStep():
            v = ws.deployments.judge_canary(
                step.deployment,
                max_error_rate=step.max_error_rate,
                max_p99_ms=step.max_p99_ms,
                min_requests=step.min_requests,
            )
            return f"{step.deployment}: canary judged, {v.decision}"
        case spec.KillServerStep():
            return _kill_server(ws, step.deployment)
        case spec.TrafficStep():
            from mlops_console.loadgen import send_traffic

            report = send_traffic(
                ws,
                step.deployment,
                path=_file(ws, step.rows_from),
                requests=step.requests,
                rate=step.rate,
            )
            return f"traffic to {step.deployment}: {report.summary()}"
        case spec.LabelsStep():
            return _write_labels(ws, scenario, step)
        case spec.ImportLabelsStep():
            _wait_collected(ws, step.deployment, _file(ws, step.file))
            out = ws.monitor.import_labels(
                step.deployment,
                _file(ws, step.file),
                label_column=step.label,
                entity_column=step.entity,
                time_column=None,
            )
            return f"labels imported for {step.deployment}: {out.get('accepted', out)}"
        case spec.AppendStep():
            path = _file(ws, step.file)
            with path.open("a") as fh:
                fh.write("\n" + step.text.strip("\n") + "\n")
            if step.file == "mlops.toml":
                ws.reload_config()
            return f"{step.file}: text appended"
        case spec.EvaluateAlertsStep():
            changes = ws.alerts.evaluate()
            return f"alert rules evaluated ({len(changes)} change(s))"
        case spec.PluginStep():  # a plugin's step kind (`mlops_lab_steps`)
            return step.run(ws, scenario, state)
    raise ConfigError(f"Unknown step {step!r}.")  # pragma: no cover (the union is closed)


def _wait_collected(ws: Workspace, deployment: str, labels: Path, timeout: float = 30.0) -> None:
    """Wait until the predictions the labels are for have been collected (a server closes
    its prediction log segment every `[serving] predlog_rotate` seconds)."""
    import time

    with labels.open(newline="") as fh:
        wanted = sum(1 for _ in fh) - 1
    deadline = time.monotonic() + timeout
    while True:
        ws.monitor.collect(deployment)
        rows, _, _ = ws.monitor.frames(deployment, 0.0, time.time() + 1, kinds=("rows",))
        if (rows is not None and len(rows) >= wanted) or time.monotonic() > deadline:
            return
        time.sleep(0.25)


def _drop_rows(path: Path, column: str, value: str) -> str:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    if column not in fields:
        raise MlopsError(f"{path.name} has no column {column!r}.")
    kept = [r for r in rows if r[column] != value]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return f"{path.name}: {len(rows) - len(kept)} row(s) with {column} = {value} removed"


def _kill_server(ws: Workspace, name: str) -> str:
    pid_file = inside(ws.state / "deployments", name, "pid")
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return f"{name}: no server process to kill"
    try:
        if os.getpgid(pid) == pid:  # the server leads its own group: never anything else
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)  # our child when this process started it: reap it
    except ChildProcessError:
        pass
    return f"{name}: its server process ({pid}) was killed"


def _write_labels(ws: Workspace, scenario: Scenario, step: spec.LabelsStep) -> str:
    """The labels of the rows served: entity and true label, `flip` of them inverted."""
    with _file(ws, step.rows_from).open(newline="") as fh:
        rows = list(csv.DictReader(fh))[: step.rows]
    rng = random.Random(7)
    dest = _file(ws, step.to)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([step.entity, step.label])
        for rec in rows:
            label = rec[step.label]
            if rng.random() < step.flip:
                label = str(1 - int(label))
            writer.writerow([rec[step.entity], label])
    return f"late labels for {step.deployment} landed in {step.to}"
