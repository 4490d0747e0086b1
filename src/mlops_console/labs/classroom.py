"""A class on one box: N student workspaces of one scenario, under one root folder.

Each student is a workspace of its own (`ROOT/student-01`, ...: its own registry, lake,
servers and ports, nothing shared). The first one builds the scenario's starting state;
the others start from a copy of its snapshot, so a class of 30 trains once. Students get
distinct `[serving] port` ranges (`base_port + 10 * i`), so their servers never race for
a port. `ROOT/class.json` (0600) lists them.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.labs.snapshot import set_serving_port

CLASS_FILE = "class.json"
PORTS_PER_STUDENT = 10


@dataclass(frozen=True)
class StudentStatus:
    student: str
    root: str
    port: int
    done: int  # objectives passing
    total: int
    objectives: dict[str, bool]
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _student(i: int) -> str:
    return f"student-{i:02d}"


def _read(root: Path) -> dict[str, Any]:
    f = root / CLASS_FILE
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise NotFound(
            f"{root} holds no class; `mlops lab class init N --scenario S --root {root}` makes one."
        ) from None
    except ValueError:
        raise MlopsError(
            f"{f} is damaged; remove it and run `mlops lab class init` again."
        ) from None


def init(
    root: Path,
    count: int,
    scenario: str,
    base_port: int = 8200,
    workers: int = 4,
    progress=lambda text: None,
    snapshot: Path | None = None,
) -> list[StudentStatus]:
    """Create `count` student workspaces under `root`, each running `scenario`; from
    `snapshot` (a workspace's `.mlops/lab/start` of that scenario) if given, else the
    first student builds the starting state and the others copy it."""
    from mlops_console.workspace import Workspace

    if not 1 <= count <= 200:
        raise MlopsError(f"A class has 1 to 200 students, not {count}.")
    if base_port < 1024 or base_port + PORTS_PER_STUDENT * count > 65535:
        raise MlopsError(f"Ports from {base_port} do not fit {count} students; pick --base-port.")
    root = root.resolve()
    if (root / CLASS_FILE).exists():
        raise Conflict(f"{root} already holds a class; `mlops lab class reset` resets it.")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = [_student(i + 1) for i in range(count)]
    ports = {n: base_port + PORTS_PER_STUDENT * i for i, n in enumerate(names)}

    for name in names:  # one at a time: migrations (alembic) are not for threads
        Workspace.init(root / name, name=name).close()
        set_serving_port(root / name, ports[name])

    def make(name: str, from_snapshot: Path | None) -> None:
        with Workspace.open(root / name) as ws:
            ws.labs.start(scenario, from_snapshot=from_snapshot)
        progress(f"{name} ready (ports from {ports[name]})")

    rest = names
    if snapshot is None:
        make(names[0], None)
        snapshot, rest = root / names[0] / ".mlops" / "lab" / "start", names[1:]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for f in [pool.submit(make, n, snapshot) for n in rest]:
            f.result()
    record = {"scenario": scenario, "students": [{"name": n, "port": ports[n]} for n in names]}
    fd = os.open(root / CLASS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=1)
    return status(root)


def _each(root: Path, fn, workers: int = 4) -> list[StudentStatus]:
    record = _read(root.resolve())
    students = record["students"]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda s: fn(root.resolve(), s), students))


def _one(root: Path, s: dict[str, Any], reset: bool = False) -> StudentStatus:
    from mlops_console.workspace import Workspace

    folder = root / s["name"]
    try:
        with Workspace.open(folder) as ws:
            st = ws.labs.reset() if reset else ws.labs.status()
    except MlopsError as exc:
        return StudentStatus(s["name"], str(folder), s["port"], 0, 0, {}, str(exc))
    marks = {o.id: o.passed for o in st.objectives}
    return StudentStatus(s["name"], str(folder), s["port"], sum(marks.values()), len(marks), marks)


def status(root: Path) -> list[StudentStatus]:
    """Every student's objectives, passing or not."""
    return _each(root, _one)


def reset(root: Path) -> list[StudentStatus]:
    """Reset every student's workspace to the scenario's starting state."""
    return _each(root, lambda r, s: _one(r, s, reset=True))


def stop(root: Path) -> int:
    """Stop every student's servers and daemon (the class stays; reset starts them)."""
    from mlops_console.workspace import Workspace

    record = _read(root.resolve())
    for s in record["students"]:
        with Workspace.open(root.resolve() / s["name"]) as ws:
            ws.labs.stop()
    return len(record["students"])
