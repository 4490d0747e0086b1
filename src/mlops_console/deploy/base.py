"""What a deploy target implements: MLflow deployment-client verbs, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


class DeployError(MlopsError):
    """A target could not do what was asked (a server that did not start, a load it refused).
    Targets raise it (plugins' too); every surface reports it like any other MlopsError."""


class DeployTarget:
    """create / update / delete / get / predict / logs (MLflow's deployment-client verbs),
    plus promote / rollback / status for canaries. Every call is idempotent; `config`
    is the deployment's recorded settings (host, port, runtime, ...)."""

    name = "base"

    def __init__(self, ws: Workspace):
        self.ws = ws

    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        """Start serving `bundle`; `digest` is the registry's hash of it (the sha256 of its
        bundle.json), which the server checks before it reads anything else."""
        raise NotImplementedError

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def list(self) -> list[str]:
        """Names of the deployments this target is running now."""
        raise NotImplementedError

    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: list[dict[str, Any]],
        output: str = "predict",
    ) -> list:
        raise NotImplementedError

    def logs(self, name: str, tail: int = 100) -> str:
        raise NotImplementedError

    def fetch_prediction_logs(self, name: str, config: dict[str, Any], dest: Path) -> int:
        """Copy closed prediction-log segments (`*.jsonl`) of a remote deployment into
        `dest` and delete them remotely once copied; returns how many. Local and Docker
        servers write into `dest` directly, so the default does nothing."""
        return 0
