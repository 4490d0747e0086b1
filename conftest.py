"""How the suite is spread over pytest-xdist's workers, when it is (`make test XDIST="-n 2
--dist loadgroup --no-loadscope-reorder"`). `make test` runs in one process: on this
2-core machine two workers took 35 min against 40 (the long fleet tests are CPU-bound) and
load made 6 tests fail that pass alone, so they are not the default.

- A test file is one unit of work, so its module-scoped fixtures (a trained workspace, a
  Dask cluster, a Ray head) are built once, on one worker.
- The files that drive the Docker engine are one unit together: a module that started the
  engine stops it after itself, which must not happen under another module's feet.
- In PER_TEST files every test is its own unit: they have only function-scoped setup (a new
  device lab each) and are long, so they are what balances the two workers.
- Units start longest first (tests/durations.json: seconds per file from a whole run), so
  that no long one is left to run alone at the end.

Without xdist nothing is marked or reordered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DOCKER = {
    "tests/integration/test_docker.py",
    "plugins/mlops-edge-ssh/tests/test_fleet_docker.py",
    "plugins/mlops-edge-ssh/tests/test_fleet_docker_rollout.py",
}
PER_TEST = {
    "plugins/mlops-edge-ssh/tests/test_fleet_rollout.py",
    "plugins/mlops-edge-ssh/tests/test_fleet_target.py",
    "plugins/mlops-edge-ssh/tests/test_fleet_cli.py",
    "tests/integration/test_daemon_recovery.py",
}


def _weights() -> dict[str, float]:
    try:
        return json.loads((HERE / "tests/durations.json").read_text())
    except (OSError, ValueError):
        return {}


def _distributed(config: pytest.Config) -> bool:
    """Run by pytest-xdist (the controller or a worker), not in one process."""
    return hasattr(config, "workerinput") or bool(getattr(config.option, "numprocesses", None))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _distributed(config):
        return  # one process: the files' own order, nothing marked
    weights = _weights()
    unit_weight: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path in DOCKER:
            unit = "docker"
            weight = sum(weights.get(p, 5.0) for p in DOCKER)
        elif path in PER_TEST:
            unit = item.nodeid
            weight = weights.get(item.nodeid, weights.get(path, 5.0))
        else:
            unit = path
            weight = weights.get(path, 5.0)
        unit_weight[unit] = weight
        if unit != item.nodeid:
            item.add_marker(pytest.mark.xdist_group(unit))
        item.stash[_UNIT] = unit
    # heaviest unit first; within a unit, the order the tests were collected in
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda it: (-unit_weight[it.stash[_UNIT]], it.stash[_UNIT], order[id(it)]))


_UNIT = pytest.StashKey[str]()
