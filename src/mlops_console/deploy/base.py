"""What a deploy target implements: MLflow deployment-client verbs, idempotently."""

from __future__ import annotations

import abc
import builtins
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


class DeployError(MlopsError):
    """A target could not do what was asked (a server that did not start, a load it refused).
    Targets raise it (plugins' too); every surface reports it like any other MlopsError."""


class DeployRefused(DeployError):
    """The target's own gates refused the version (a fleet rollout its device gates aborted)
    or its rollout stopped for the engineer (paused past its unreachable threshold): the
    same deploy fails again, so a chain that meets it ends `gates_failed`, not retried."""


class PortTaken(DeployError):
    """The server could not listen: another process holds its port (the deploy service
    picks another free port when it chose this one itself)."""


class Capability(StrEnum):
    """What a target can do beyond create / update / delete / list / get / predict / logs.
    The core asks `capability in target.capabilities`, never which class a target is."""

    CANARY = "canary"  # update(role="canary", percent=...) splits traffic; promote / rollback
    SHADOW = "shadow"  # update(role="shadow") mirrors traffic to a version that never answers
    HOT_SWAP = "hot_swap"  # update(role="primary") swaps the version without dropping a request
    REMOTE_LOGS = "remote_logs"  # prediction logs live elsewhere: fetch_prediction_logs
    FLEET = "fleet"  # one deployment is many devices (waves, per-device status)
    IMAGE_EXPORT = "image_export"  # export() writes the deployment's image as a tar
    SUPERVISED = "supervised"  # the daemon restarts its server when it dies (get() has a pid)


class DeployTarget(abc.ABC):
    """MLflow's deployment-client verbs (create / update / delete / list / get / predict /
    logs), plus promote / rollback / status for targets with the canary capability. Every
    call is idempotent; `config` is the deployment's recorded settings (host, port,
    runtime, ...). Subclasses raise DeployError (or another MlopsError) for what failed."""

    name = "base"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, ws: Workspace):
        self.ws = ws

    @abc.abstractmethod
    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        """Start serving `bundle`; `digest` is the registry's hash of it (the sha256 of its
        bundle.json), which the server checks before it reads anything else."""

    @abc.abstractmethod
    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """Serve `bundle` as the primary, or (with those capabilities) as a canary taking
        `percent` of traffic or a shadow."""

    @abc.abstractmethod
    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        """Stop serving `name`; nothing to stop is not an error."""

    @abc.abstractmethod
    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """The deployment as the target sees it now: at least `status` and `endpoint`."""

    @abc.abstractmethod
    def list(self) -> list[str]:
        """Names of the deployments this target is running now."""

    @abc.abstractmethod
    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: builtins.list[dict[str, Any]],
        output: str = "predict",
    ) -> builtins.list:
        """Predictions of the deployment for `records`."""

    @abc.abstractmethod
    def logs(self, name: str, tail: int = 100) -> str:
        """The last `tail` lines of the deployment's server log."""

    def _unsupported(self, what: str) -> DeployError:
        return DeployError(f"The {self.name} target cannot {what}.")

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported("promote a canary")

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported("roll back a canary")

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise self._unsupported("report a canary's status")

    def export(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        dest: Path,
        digest: str | None = None,
    ) -> Path:
        """Write the deployment's image as a tar at `dest` (the image_export capability)."""
        raise self._unsupported("export an image")

    def fetch_prediction_logs(self, name: str, config: dict[str, Any], dest: Path) -> int:
        """Copy closed prediction-log segments (`*.jsonl`) of a remote deployment into
        `dest` and delete them remotely once copied; returns how many (the remote_logs
        capability). Targets that write into `dest` directly do nothing."""
        return 0

    def scopes(self, name: str, config: dict[str, Any]) -> dict[str, builtins.list[str]]:
        """The devices serving deployment `name`, each with the groups it is in, so
        monitoring and alerts can measure one device or one group (the fleet capability;
        {} for one server). Cheap: read from the target's own records, never the devices.
        Segments of device D are published into the deployment's log folder as
        `STEM--D.jsonl`."""
        return {}
