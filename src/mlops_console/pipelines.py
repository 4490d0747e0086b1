"""`ws.pipelines`: the pipeline specs in `pipelines/*.toml`, found one way for every caller.

A pipeline is named by its file (`pipelines/NAME.toml`): that name is what jobs, schedules
and the daemon's API carry, so it is the one this service hands out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError
from mlops_console.names import RULES, check_name, inside, is_name

if TYPE_CHECKING:
    from mlops_console.pipeline_spec import PipelineSpec
    from mlops_console.workspace import Workspace

FOLDER = "pipelines"


@dataclass(frozen=True)
class Pipeline:
    name: str  # the file's stem: what jobs and schedules name it by
    path: Path
    spec: PipelineSpec


class Pipelines:
    def __init__(self, ws: Workspace):
        self.ws = ws

    @property
    def folder(self) -> Path:
        return self.ws.root / FOLDER

    def path(self, name: str) -> Path:
        """`pipelines/NAME.toml`, or (given on the command line) a `.toml` file inside
        the workspace. The daemon's API takes names only (`names.check_name`)."""
        if name.endswith(".toml"):
            p = inside(self.ws.root, name)
            if p.is_file():
                return p
            raise MlopsError(f"No pipeline file {p}; give a pipeline name or an existing file.")
        candidate = inside(self.folder, f"{check_name('pipeline', name)}.toml")
        if candidate.exists():
            return candidate
        known = ", ".join(sorted(x.stem for x in self.folder.glob("*.toml")))
        raise MlopsError(f"No pipeline {name!r} in {self.folder} (known: {known or 'none'}).")

    def get(self, name: str) -> Pipeline:
        """The pipeline NAME (or a `.toml` file, see `path`); an error if it is invalid."""
        from mlops_console.pipeline_spec import load_pipeline

        path = self.path(name)
        return Pipeline(path.stem, path, load_pipeline(path))

    def list(self, on_invalid: Callable[[str, str], None] | None = None) -> list[Pipeline]:
        """The valid pipelines, by name; each invalid one is passed to `on_invalid(name,
        detail)` and left out, so one broken file does not hide the others."""
        from mlops_console.pipeline_spec import load_pipeline

        out = []
        for path in sorted(self.folder.glob("*.toml")):
            if not is_name("pipeline", path.stem):
                if on_invalid:
                    on_invalid(path.stem, f"{path.name}: {RULES['pipeline'].allowed}")
                continue
            try:
                out.append(Pipeline(path.stem, path, load_pipeline(path)))
            except MlopsError as exc:
                if on_invalid:
                    on_invalid(path.stem, str(exc))
        return out

    def for_model(self, model: str) -> Pipeline | None:
        """The pipeline that registers `model` (its retrain), if any."""
        return next((p for p in self.list() if p.spec.register_as == model), None)

    def run(self, name: str, **options: Any):
        """Train the pipeline end to end (`training.runner.train`); its TrainResult."""
        from mlops_console.training.runner import train

        return train(self.ws, name, **options)

    def retest(self, ref: str, stage=lambda s: None) -> dict[str, Any]:
        """Run the checks and gates again on the registered version `ref`."""
        from mlops_console.testing.retest import retest_version

        return retest_version(self.ws, ref, stage)

    def reproduce(self, run: str, tolerance: float = 1e-6, stage=lambda s: None) -> dict[str, Any]:
        """Re-run `run` from its recorded lineage and compare the outcome."""
        from mlops_console.testing.retest import reproduce

        return reproduce(self.ws, run, tolerance, stage)


def parse_overrides(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`KEY=VALUE` overrides of a pipeline's spec, as `mlops run --set` and the console
    take them: a VALUE that reads as JSON is that value (`0.3`, `true`, `[1, 2]`), any
    other is the text. Raises ValueError naming a word that is not KEY=VALUE."""
    import json

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}.")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out
