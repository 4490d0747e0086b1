"""What every command shares: opening the workspace, `--json` or a table, stable JSON.

A list or show command is its own logic only (sqlite-utils' `output_options` is the
model): `@pass_workspace` opens the workspace, passes it first and closes it when the body
returns; `@output_options` adds `--json` and prints what the body returns, an `Output`:
its data as JSON with `--json`, else its human form (a table, key-value lines, text).

    @runs.command("list")
    @output_options
    @pass_workspace
    def list_runs(ws: Workspace) -> Output:
        found = ws.runs.search()
        return Output({"runs": [r.to_dict() for r in found]}, lambda: table(HEADERS, rows(found)))
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from mlops_console.formatting import num as num  # re-exported: the commands use them
from mlops_console.formatting import when as when

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def open_workspace(ctx: click.Context) -> Workspace:
    """The workspace `--workspace` names, or the nearest one up from here."""
    from mlops_console.workspace import Workspace

    return Workspace.open((ctx.obj or {}).get("workspace"))


def workspace_root(ctx: click.Context) -> Path:
    """The folder of the workspace `--workspace` names (or the nearest one up from here),
    without opening it: for the commands that must work while mlops.toml is broken."""
    from mlops_console.workspace import find_root

    return find_root((ctx.obj or {}).get("workspace"))


def pass_workspace(f: Callable[Concatenate[Workspace, P], R]) -> Callable[P, R]:
    """Open the workspace for the command, pass it as the first argument and close it
    when the command's body returns (before `output_options` prints what it returned)."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with open_workspace(click.get_current_context()) as ws:
            return f(ws, *args, **kwargs)

    return wrapper


def json_option(f: F) -> F:
    """`--json` (as `as_json`), worded the same on every command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


@dataclass(frozen=True)
class Output:
    """What a command prints: `data` as JSON with `--json`, else `human()`."""

    data: Any
    human: Callable[[], None]


def output_options(f: Callable[P, Output | None]) -> Callable[..., None]:
    """Add `--json` to a command whose body returns an `Output` (None: it printed itself)."""

    @json_option
    @functools.wraps(f)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
        out = f(*args, **kwargs)
        if out is None:
            return
        if as_json:
            emit_json(out.data)
        else:
            out.human()

    return wrapper


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def _clean(obj: Any) -> Any:
    if hasattr(obj, "to_dict") and not isinstance(obj, type):  # a service's record
        return _clean(obj.to_dict())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(_clean(obj), indent=2, sort_keys=False, default=str))


def kv(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {v}")
