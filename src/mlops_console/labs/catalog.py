"""Where scenarios are found: the ones shipped in `labs/scenarios/`, then those plugins ship
(`mlops_lab_scenario_dirs`), then a trainer's own
folders (`[labs] paths` in mlops.toml, then $MLOPS_LABS_PATH, `:`-separated). A later
folder's scenario of the same name replaces an earlier one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from mlops_console.labs.spec import Scenario
    from mlops_console.workspace import Workspace

ENV_VAR = "MLOPS_LABS_PATH"
SHIPPED = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True)
class ScenarioInfo:
    name: str
    title: str
    summary: str
    path: str
    objectives: int
    error: str = ""  # a file that does not parse is listed with what is wrong

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def folders(ws: Workspace | None) -> list[Path]:
    from mlops_console.plugins import load_plugins

    out = [SHIPPED]
    out += [Path(p) for p in load_plugins().lab_scenario_dirs()]
    if ws is not None:
        out += [(ws.root / p).expanduser() for p in ws.config.labs.paths]
    out += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return out


def _files(ws: Workspace | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in folders(ws):
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.toml")):
            found[f.stem] = f
    return found


def scenarios(ws: Workspace | None) -> list[ScenarioInfo]:
    from mlops_console.labs.spec import load_scenario

    out = []
    for stem, path in sorted(_files(ws).items()):
        try:
            sc = load_scenario(path)
        except ConfigError as exc:
            out.append(ScenarioInfo(stem, "", "", str(path), 0, str(exc)))
            continue
        out.append(ScenarioInfo(sc.name, sc.title, sc.summary, str(path), len(sc.objectives)))
    return out


def find_scenario(ws: Workspace | None, name: str) -> Scenario:
    """The scenario `name` (a file's stem), or a scenario file's path; parsed strictly."""
    from mlops_console.labs.spec import load_scenario

    if name.endswith(".toml"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise NotFound(f"No scenario file {path}.")
        return load_scenario(path.resolve())
    files = _files(ws)
    if name not in files:
        raise NotFound(
            f"No scenario {name!r}; `mlops lab list` shows them "
            f"({', '.join(sorted(files)) or 'none found'})."
        )
    sc = load_scenario(files[name])
    if sc.name != name:
        raise ConfigError(f"{files[name]}: name {sc.name!r} must match the file's name {name!r}.")
    return sc
