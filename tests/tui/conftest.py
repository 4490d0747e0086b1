"""A console test fails on a worker error: a load or a detail that raises is a bug that the
console shows only as a notification, so the test must not pass over it."""

import pytest

from mlops_console.tui.app import MlopsConsole


@pytest.fixture(autouse=True)
def worker_errors(monkeypatch):
    """Every worker of the console that ended in an error, as 'name: error'."""
    errors: list[str] = []
    handle = MlopsConsole.on_worker_state_changed

    def record(self, event) -> None:
        if event.state.name == "ERROR":
            errors.append(f"{event.worker.name or event.worker.group}: {event.worker.error!r}")
        handle(self, event)

    monkeypatch.setattr(MlopsConsole, "on_worker_state_changed", record)
    monkeypatch.setattr(MlopsConsole, "worker_errors", errors, raising=False)
    yield errors
    assert not errors, f"console workers failed: {errors}"
