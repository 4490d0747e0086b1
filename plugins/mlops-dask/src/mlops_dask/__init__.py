"""mlops-dask: a pipeline's hyperparameter search on a Dask cluster.

`[compute] backend = "dask"` and `scheduler = "tcp://HOST:8786"` in mlops.toml (or
`mlops run PIPELINE --compute dask --scheduler ...`) send the search's candidates to the
cluster through joblib's Dask backend; the refit and the checks stay where the run
started. `mlops compute status` shows the cluster or why it cannot be reached.
Heavy imports (dask, distributed) happen only when a hook's result is used.
"""

from __future__ import annotations

from typing import Any

from mlops_console.plugins import hookimpl

__version__ = "0.1.0"


def _dask_backend(settings: dict[str, Any]):
    from mlops_dask.backend import DaskSearch

    return DaskSearch(settings)


@hookimpl
def mlops_compute_backends() -> dict[str, Any]:
    return {"dask": _dask_backend}


@hookimpl
def mlops_register_commands(cli) -> None:
    from mlops_dask.cli import compute

    cli.add_command(compute)
