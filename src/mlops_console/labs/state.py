"""The lab's own state: which scenario runs, what fired, which hints were shown, the event
timeline. One 0600 JSON file, `.mlops/lab/state.json`, written atomically."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LabEvent:
    at: float
    kind: str  # start, inject, hint, check, pass, solve, reset
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabState:
    scenario: str = ""
    scenario_path: str = ""
    scenario_sha256: str = ""
    started_at: float = 0.0
    fired: list[str] = field(default_factory=list)  # timeline entries fired: "1", "3"
    hints_shown: dict[str, int] = field(default_factory=dict)  # objective -> hints shown
    passed: list[str] = field(default_factory=list)  # objectives that passed at least once
    vars: dict[str, Any] = field(default_factory=dict)  # what steps remembered ($bad)
    events: list[LabEvent] = field(default_factory=list)

    def log(self, kind: str, text: str) -> LabEvent:
        event = LabEvent(time.time(), kind, text)
        self.events.append(event)
        return event

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events": [e.to_dict() for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        events = [LabEvent(**e) for e in data.get("events", [])]
        return cls(**{**data, "events": events})


def lab_dir(state_dir: Path) -> Path:
    folder = state_dir / "lab"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def load(state_dir: Path) -> LabState | None:
    f = state_dir / "lab" / "state.json"
    try:
        return LabState.from_dict(json.loads(f.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a damaged file: the lab is started again


def save(state_dir: Path, state: LabState) -> None:
    folder = lab_dir(state_dir)
    tmp = folder / f".state.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state.to_dict(), fh, indent=1)
    os.replace(tmp, folder / "state.json")
