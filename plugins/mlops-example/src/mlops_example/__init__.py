"""An example mlops-console plugin: a notifier, a model check and a CLI command.

Each hook is a module-level function marked with `hookimpl`; the entry point
`example = "mlops_example"` in pyproject.toml is all mlops-console needs to find them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from mlops_console.plugins import hookimpl

__version__ = "0.1.0"

DEFAULT_MAX_MODEL_BYTES = 50_000_000


def jsonl_notifier(event: dict[str, Any]) -> None:
    """Append the event as one JSON line; raises (and is reported) if the file cannot be written."""
    settings = event.get("settings") or {}
    path = Path(
        settings.get("path")
        or os.environ.get("MLOPS_EXAMPLE_EVENTS")
        or Path(event["state"]) / "logs" / "example-events.jsonl"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in event.items() if k not in ("settings", "state")}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def max_model_size(ctx) -> dict[str, Any]:
    """Passes when the trained model's file is at most $MLOPS_EXAMPLE_MAX_MODEL_BYTES."""
    limit = int(os.environ.get("MLOPS_EXAMPLE_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES))
    size = int(ctx.model_bytes)
    return {
        "passed": size <= limit,
        "reason": f"model file {size} bytes, limit {limit}",
        "measured": {"model_bytes": size, "limit_bytes": limit},
    }


@hookimpl
def mlops_notifiers() -> dict[str, Any]:
    return {"jsonl": jsonl_notifier}


@hookimpl
def mlops_model_checks() -> dict[str, Any]:
    return {"max_model_size": max_model_size}


@hookimpl
def mlops_register_commands(cli: click.Group) -> None:
    @cli.group()
    def example() -> None:
        """Commands of the mlops-example plugin."""

    @example.command()
    @click.option("--name", default="world", show_default=True)
    def hello(name: str) -> None:
        """Say hello (proves a plugin's command runs inside `mlops`)."""
        click.echo(f"Hello, {name}, from mlops-example {__version__}.")
