"""The `dask` compute backend: a pipeline's search on a Dask cluster through joblib.

Connected and checked before the search (reachable, large enough, same versions); the
training data is scattered once to every worker (`scatter=[X, y]`, broadcast), so a
worker lost mid-search leaves the data on the others and Dask re-runs its candidates.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from mlops_console.errors import ConfigError, MlopsError
from mlops_console.training.search import ComputeUnavailable
from mlops_dask.versions import local_versions, version_skew, worker_versions

LOCAL_CLUSTER = "local-cluster"


class VersionSkew(MlopsError):
    """The workers' packages differ from this machine's: refused before the search."""


def connect(settings: dict[str, Any]):
    """(client, cluster or None) for the [compute] settings; ComputeUnavailable when the
    scheduler cannot be reached in `connect_timeout` seconds."""
    from distributed import Client, LocalCluster

    address = settings.get("scheduler")
    timeout = float(settings.get("connect_timeout") or 5)
    if not address:
        raise ConfigError(
            'backend = "dask" needs a scheduler: set [compute].scheduler = "tcp://HOST:8786" '
            '(or "local-cluster" to try one on this machine), or pass --scheduler.'
        )
    if address == LOCAL_CLUSTER:
        cluster = LocalCluster(
            n_workers=int(settings.get("workers") or 2),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return Client(cluster, set_as_default=False), cluster
    if "://" not in address:
        raise ConfigError(
            f"[compute].scheduler {address!r} is not an address; give e.g. "
            '"tcp://HOST:8786", or "local-cluster".'
        )
    with _quiet():
        try:
            return Client(address, timeout=timeout, set_as_default=False), None
        except (OSError, TimeoutError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ComputeUnavailable(
                f"cannot reach the Dask scheduler at {address} within {timeout:g}s ({reason[:120]})"
            ) from None


@contextlib.contextmanager
def _quiet():
    """distributed logs each failed connection attempt; the run says it in one line."""
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def cluster_summary(client) -> dict[str, Any]:
    """Workers, threads and memory of the cluster the client is connected to."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address") or client.scheduler.address,
        "workers": len(workers),
        "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
        "memory_bytes": sum(int(w.get("memory_limit") or 0) for w in workers.values()),
        "worker_list": {
            addr: {
                "name": str(w.get("name", addr)),
                "threads": int(w.get("nthreads", 0)),
                "memory_bytes": int(w.get("memory_limit") or 0),
            }
            for addr, w in sorted(workers.items())
        },
    }


class DaskSearch:
    """What the core's search asks of a compute backend (see training.search.Compute)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.client: Any = None
        self.cluster: Any = None
        self.summary: dict[str, Any] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.local = local_versions()
        self.start_workers: set[str] = set()
        self.lost: list[str] = []
        self.joined: list[str] = []

    def open(self) -> None:
        self.client, self.cluster = connect(self.settings)
        try:
            self.summary = cluster_summary(self.client)
            need = int(self.settings.get("min_threads") or 1)
            if self.summary["threads"] < need:
                raise ComputeUnavailable(
                    f"the cluster at {self.summary['scheduler']} has "
                    f"{self.summary['workers']} worker(s) with {self.summary['threads']} "
                    f"thread(s), fewer than [compute].min_threads = {need}"
                )
            self.versions = worker_versions(self.client)
            problems = version_skew(self.local, self.versions)
            if problems:
                more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
                raise VersionSkew(
                    "The Dask workers' packages differ from this machine's, so the search "
                    f"was not started: {'; '.join(problems[:2])}{more}. Install the same "
                    "versions on the workers, or run with --compute local."
                )
            self.start_workers = set(self.summary["worker_list"])
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def parallel(self, X, y):
        from joblib import parallel_config

        with parallel_config(
            backend="dask",
            client=self.client,
            scatter=[X, y],
            retries=int(self.settings.get("retries") or 0),
            wait_for_workers_timeout=float(self.settings.get("connect_timeout") or 5),
        ):
            yield

    def poll(self) -> list[str]:
        """Lines for workers that left (Dask re-runs their candidates) or joined."""
        try:
            now = set(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception as exc:  # the scheduler itself is gone: joblib will raise
            return [f"the scheduler did not answer ({type(exc).__name__})"]
        lines = []
        for addr in sorted(self.start_workers - now - set(self.lost)):
            self.lost.append(addr)
            lines.append(
                f"worker {addr} left during the search; Dask re-runs its candidates on "
                f"the {len(now)} other worker(s)"
            )
        for addr in sorted(now - self.start_workers - set(self.joined)):
            self.joined.append(addr)
            lines.append(f"worker {addr} joined during the search")
        return lines

    def describe(self) -> dict[str, Any]:
        if self.client is not None and self.start_workers:
            self.poll()
        return {
            "backend": "dask",
            "scheduler": self.summary.get("scheduler", self.settings.get("scheduler")),
            "local_cluster": self.cluster is not None,
            "workers": self.summary.get("workers"),
            "threads": self.summary.get("threads"),
            "memory_bytes": self.summary.get("memory_bytes"),
            "local_versions": self.local,
            "worker_versions": self.versions,
            "workers_lost": list(self.lost),
            "workers_joined": list(self.joined),
        }

    def close(self) -> None:
        for thing in (self.client, self.cluster):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self.client = self.cluster = None
