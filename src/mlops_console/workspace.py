"""The workspace: a folder with `mlops.toml`, user text at the top and state in `.mlops/`.

`Workspace.open()` is the public Python API's entry point; it hands out the services
(`ws.runs`, `ws.models`, ...) that the CLI, the console, the daemon and plugins share.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_console.errors import ConfigError, MlopsError, WorkspaceNotFound

if TYPE_CHECKING:
    from mlops_console.automation.jobs import JobStore
    from mlops_console.config import WorkspaceConfig
    from mlops_console.data.datasets import DatasetStore
    from mlops_console.deploy.service import Deployments
    from mlops_console.features.store import FeatureStore
    from mlops_console.labs.service import Labs
    from mlops_console.monitoring.alerts import Alerts
    from mlops_console.monitoring.service import Monitor
    from mlops_console.pipelines import Pipelines
    from mlops_console.registry.models import ModelRegistry
    from mlops_console.store.artifacts import ArtifactStore
    from mlops_console.store.gc import GcReport
    from mlops_console.tracking.runs import RunTracker

CONFIG_FILE = "mlops.toml"
STATE_DIR = ".mlops"
ENV_VAR = "MLOPS_WORKSPACE"

LAYOUT = ("pipelines", "features", "contracts", "data")
STATE_LAYOUT = ("objects", "lake", "logs")


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.config_path = self.root / CONFIG_FILE
        self.state = self.root / STATE_DIR
        self._config: WorkspaceConfig | None = None
        self._config_sha256 = ""
        raw = self._config_bytes()
        _private_state(self.state)
        self._check_config(raw)
        from mlops_console.store.db import Database

        self.db = Database(
            self.state / "registry.db", holds=(self.state / "objects", self.state / "lake")
        )
        from mlops_console.tracking.runs import end_abandoned_runs

        try:
            self.db.ensure_schema()
            end_abandoned_runs(self.db)
        except BaseException:
            self.db.close()
            raise

    # --- finding and creating ------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None) -> Workspace:
        """Open the nearest workspace: `path` (or above it), $MLOPS_WORKSPACE, or the
        current folder and its parents."""
        return cls(find_root(path))

    @classmethod
    def init(
        cls, path: str | Path = ".", sample: bool = False, name: str | None = None
    ) -> Workspace:
        """Lay out a new workspace (idempotent: existing files are kept)."""
        root = Path(path).resolve()
        if root.exists() and not root.is_dir():
            raise MlopsError(f"{root} exists and is not a folder; choose another path.")
        root.mkdir(parents=True, exist_ok=True)
        for sub in LAYOUT:
            (root / sub).mkdir(exist_ok=True)
        cfg = root / CONFIG_FILE
        if not cfg.exists():
            text = _template("mlops.toml").replace("{{name}}", name or root.name)
            cfg.write_text(text)
        gitignore = root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text(f"{STATE_DIR}/\n")
        if sample:
            src = sample_data_dir()
            for f in sorted(src.glob("*.csv")):
                dest = root / "data" / f.name
                if not dest.exists():
                    shutil.copyfile(f, dest)
            for template, target in (
                ("churn_pipeline.toml", "pipelines/churn.toml"),
                ("customer_features.toml", "features/customer.toml"),
                ("support_features.toml", "features/region_support.toml"),
            ):
                if not (root / target).exists():
                    (root / target).write_text(_template(template))
        return cls(root)

    # --- settings ----------------------------------------------------------------------

    @property
    def config(self) -> WorkspaceConfig:
        """mlops.toml's settings, built on first use: the pydantic models cost more CPU
        than a read-only command that needs no setting takes in all (see _check_config)."""
        if self._config is None:
            self._config, self._config_sha256 = self._read_config(self._config_bytes())
        return self._config

    @property
    def config_sha256(self) -> str:
        """The sha256 of the mlops.toml bytes that `config` holds."""
        self.config  # noqa: B018  (loads it)
        return self._config_sha256

    def _config_bytes(self) -> bytes:
        try:
            return self.config_path.read_bytes()
        except FileNotFoundError:
            raise WorkspaceNotFound(
                f"{self.root} has no {CONFIG_FILE}; `mlops init {self.root}` makes it a workspace."
            ) from None
        except OSError as exc:
            raise ConfigError(f"{self.config_path} cannot be read ({exc.strerror}).") from None

    def _read_config(self, raw: bytes) -> tuple[WorkspaceConfig, str]:
        from mlops_console.config import parse_workspace_config

        return parse_workspace_config(raw, self.config_path), hashlib.sha256(raw).hexdigest()

    def _check_config(self, raw: bytes) -> None:
        """Every open checks mlops.toml, as it always did: a broken file is refused at once
        with what is wrong. Checking costs ~90 ms of CPU (pydantic), so the bytes this
        version of the package last found valid are remembered (their sha256 in
        .mlops/config-checked) and those are not checked again until they change."""
        from mlops_console import __version__

        seen = f"{__version__} {hashlib.sha256(raw).hexdigest()}\n"
        marker = self.state / "config-checked"
        try:
            if marker.read_text() == seen:
                return
        except OSError:
            pass
        self._config, self._config_sha256 = self._read_config(raw)  # raises ConfigError
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(seen)
            os.replace(tmp, marker)
        except OSError:  # a read-only or full disk: check again next time, nothing lost
            tmp.unlink(missing_ok=True)

    # --- services ----------------------------------------------------------------------

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from mlops_console.store.artifacts import ArtifactStore

        return ArtifactStore(self.state / "objects")

    @cached_property
    def data(self) -> DatasetStore:
        from mlops_console.data.datasets import DatasetStore

        return DatasetStore(self)

    @cached_property
    def features(self) -> FeatureStore:
        from mlops_console.features.store import FeatureStore

        return FeatureStore(self)

    @cached_property
    def deployments(self) -> Deployments:
        from mlops_console.deploy.service import Deployments

        return Deployments(self)

    @cached_property
    def jobs(self) -> JobStore:
        from mlops_console.automation.jobs import JobStore

        return JobStore(self)

    @cached_property
    def runs(self) -> RunTracker:
        from mlops_console.tracking.runs import RunTracker

        return RunTracker(self)

    @cached_property
    def monitor(self) -> Monitor:
        from mlops_console.monitoring.service import Monitor

        return Monitor(self)

    @cached_property
    def alerts(self) -> Alerts:
        from mlops_console.monitoring.alerts import Alerts

        return Alerts(self)

    @cached_property
    def models(self) -> ModelRegistry:
        from mlops_console.registry.models import ModelRegistry

        return ModelRegistry(self)

    @cached_property
    def labs(self) -> Labs:
        """Teaching labs: the scenario running here, its objectives, hints and reset."""
        from mlops_console.labs.service import Labs

        return Labs(self)

    @cached_property
    def pipelines(self) -> Pipelines:
        from mlops_console.pipelines import Pipelines

        return Pipelines(self)

    def gc(
        self, dry_run: bool = False, grace_seconds: int | None = None, trust_registry: bool = False
    ) -> GcReport:
        """Remove unreferenced artifacts; `trust_registry` even when that is most of them."""
        from mlops_console.store.gc import collect_garbage

        grace = self.config.store.gc_grace_seconds if grace_seconds is None else grace_seconds
        return collect_garbage(
            self, dry_run=dry_run, grace_seconds=grace, trust_registry=trust_registry
        )

    def reload_config(self, force: bool = False) -> bool:
        """Read mlops.toml again if its bytes changed (or `force`); True if the settings
        were replaced.

        An invalid file raises ConfigError and leaves the current settings in force."""
        try:
            raw = self.config_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{self.config_path} cannot be read ({exc.strerror}); the previous settings "
                "stay in force."
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self.config_sha256 and not force:
            return False
        from mlops_console.config import parse_workspace_config

        self._config = parse_workspace_config(raw, self.config_path)
        self._config_sha256 = digest
        return True

    def close(self) -> None:
        features = self.__dict__.get("features")
        if features is not None:
            features.close()
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Workspace {self.root}>"


def _private_state(state: Path) -> None:
    """Create `.mlops` and its folders 0700, and tighten them in a workspace made before:
    the registry, the lake, the models and the prediction logs (request inputs, entity
    keys) are for the workspace's owner only, and the daemon's socket is inside."""
    state.mkdir(mode=0o700, exist_ok=True)
    for sub in STATE_LAYOUT:
        (state / sub).mkdir(mode=0o700, exist_ok=True)
    for folder in (state, *(p for p in state.iterdir() if p.is_dir() and not p.is_symlink())):
        try:
            if folder.stat().st_mode & 0o077:
                folder.chmod(0o700)
        except PermissionError:  # not ours: we can use it as its owner allows, never change it
            pass


def is_workspace(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def find_root(path: str | Path | None = None) -> Path:
    if path is not None:
        start = Path(path).expanduser().resolve()
        if not start.exists():
            raise WorkspaceNotFound(
                f"{start} does not exist. Create a workspace with `mlops init {path}`."
            )
        for folder in (start, *start.parents):
            if is_workspace(folder):
                return folder
        raise WorkspaceNotFound(
            f"{start} is not inside an mlops workspace (no {CONFIG_FILE} there or above). "
            f"Create one with `mlops init {path}`."
        )
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env).expanduser().resolve()
        if not is_workspace(folder):
            raise WorkspaceNotFound(
                f"${ENV_VAR} points to {folder}, which is not an mlops workspace (no "
                f"{CONFIG_FILE}). Fix the variable, or run `mlops init {folder}`."
            )
        return folder
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if is_workspace(folder):
            return folder
    raise WorkspaceNotFound(
        f"No mlops workspace here: neither {cwd} nor a folder above it has {CONFIG_FILE}. "
        "Run `mlops init` to create one, pass --workspace, or set $MLOPS_WORKSPACE."
    )


def sample_data_dir() -> Path:
    packaged = resources.files("mlops_console") / "sample_data"
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[2] / "sample_data"
    if repo.is_dir():
        return repo
    raise MlopsError(
        "The bundled sample data is missing from this installation; reinstall mlops-console."
    )


def _template(name: str) -> str:
    return (resources.files("mlops_console") / "templates" / name).read_text()
