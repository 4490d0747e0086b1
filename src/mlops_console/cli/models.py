"""mlops models list | show | promote | rollback | history | archive | restore | delete | card."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    kv,
    num,
    open_workspace,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


@click.group()
def models() -> None:
    """The model registry: versions, aliases and their history."""


@models.command("list")
@output_options
@pass_workspace
def list_models(ws: Workspace) -> Output:
    """List models with their latest version and aliases."""
    found = ws.models.list()
    return Output(
        {"models": [m.to_dict() for m in found]},
        lambda: table(
            ["model", "versions", "latest", "aliases", "updated"],
            [
                (
                    m.name,
                    m.versions,
                    m.latest_version or "-",
                    ", ".join(f"@{a}=v{v}" for a, v in m.aliases.items()) or "-",
                    when(m.updated_at),
                )
                for m in found
            ],
            empty="No models yet. `mlops demo` or `mlops run PIPELINE` registers one.",
        ),
    )


@models.command("show")
@click.argument("ref")
@output_options
@pass_workspace
def show_model(ws: Workspace, ref: str) -> Output:
    """Show a model's versions (REF: NAME), or one version (NAME/V or NAME@ALIAS)."""
    from mlops_console.registry.models import parse_ref

    name, alias, version = parse_ref(ref)
    if alias is None and version is None:
        versions = ws.models.versions(name)
        return Output(
            {"name": name, "versions": [v.to_dict() for v in versions]},
            lambda: _versions_table(versions),
        )
    mv = ws.models.resolve(ref)
    return Output(mv.to_dict(), lambda: _show_version(mv))


def _versions_table(versions: list[Any]) -> None:
    keys = sorted({k for v in versions for k in v.metrics if k.startswith("holdout_")})[:3]
    table(
        ["version", "status", "aliases", "created", "run", *keys],
        [
            (
                v.version,
                v.status,
                ", ".join("@" + a for a in v.aliases) or "-",
                when(v.created_at),
                (v.run_id or "-")[:8],
                *(num(v.metrics.get(k)) for k in keys),
            )
            for v in versions
        ],
    )


def _show_version(mv: Any) -> None:
    kv(
        [
            ("model", mv.name),
            ("version", mv.version),
            ("status", mv.status),
            ("aliases", ", ".join("@" + a for a in mv.aliases) or "-"),
            ("created", f"{when(mv.created_at)} by {mv.created_by or '-'}"),
            ("run", mv.run_id or "-"),
            ("artifact", mv.artifact_hash),
            ("inputs", len(mv.signature.get("inputs", []))),
            ("description", mv.description or "-"),
        ]
    )
    click.echo("\nMetrics")
    table(["metric", "value"], [(k, num(v)) for k, v in sorted(mv.metrics.items())])


@models.command("promote")
@click.argument("ref")
@click.option("-a", "--alias", help="Alias to move (default: the champion alias).")
@click.option("-r", "--reason", default="", help="Why; kept in the history.")
@output_options
@pass_workspace
def promote(ws: Workspace, ref: str, alias: str | None, reason: str) -> Output:
    """Point an alias (default: champion) at the version REF names."""
    move = ws.models.promote(ref, alias=alias, reason=reason)
    return Output(move.to_dict(), lambda: _report_move(move))


@models.command("rollback")
@click.argument("name")
@click.option("-a", "--alias", help="Alias to move back (default: the champion alias).")
@click.option("--to", "to_version", type=int, help="Roll back to this version exactly.")
@click.option("-r", "--reason", default="", help="Why; kept in the history.")
@output_options
@pass_workspace
def rollback(
    ws: Workspace, name: str, alias: str | None, to_version: int | None, reason: str
) -> Output:
    """Move an alias back to the version it held before its last move."""
    move = ws.models.rollback(name, alias=alias, to_version=to_version, reason=reason)
    return Output(move.to_dict(), lambda: _report_move(move))


def _report_move(move: Any) -> None:
    if move.kind == "unchanged":
        click.echo(f"{move.model}@{move.alias} is already v{move.to_version}; nothing changed.")
        return
    before = f"v{move.from_version}" if move.from_version else "nothing"
    click.echo(f"{move.model}@{move.alias}: {before} -> v{move.to_version} ({move.kind}).")


def _parse_when(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date/time; use ISO format, e.g. 2026-11-24 or 2026-11-24T09:30."
        ) from None


@models.command("history")
@click.argument("name")
@click.option("-a", "--alias", help="Only this alias.")
@click.option("--at", "at", help="Which version the alias pointed to at this time (ISO).")
@output_options
@pass_workspace
def history(ws: Workspace, name: str, alias: str | None, at: str | None) -> Output:
    """Every alias move of a model: when, by whom, from which version to which, why."""
    if at:
        alias = alias or ws.config.registry.champion_alias
        ts = _parse_when(at)
        version = ws.models.alias_at(name, alias, ts)
        return Output(
            {"model": name, "alias": alias, "at": ts, "version": version},
            lambda: click.echo(
                f"{name}@{alias} pointed to no version at {when(ts)}."
                if version is None
                else f"{name}@{alias} pointed to v{version} at {when(ts)}."
            ),
        )
    moves = ws.models.history(name, alias)
    return Output(
        {"model": name, "history": [m.to_dict() for m in moves]},
        lambda: table(
            ["when", "alias", "from", "to", "kind", "by", "reason"],
            [
                (
                    when(m.at),
                    m.alias,
                    m.from_version or "-",
                    m.to_version or "-",
                    m.kind,
                    m.actor or "-",
                    m.reason,
                )
                for m in moves
            ],
            empty=f"No alias of {name} has moved yet.",
        ),
    )


@models.command("archive")
@click.argument("ref")
@pass_workspace
def archive(ws: Workspace, ref: str) -> None:
    """Archive a version: kept, but no alias may point to it."""
    click.echo(f"{ws.models.archive(ref).ref} archived.")


@models.command("restore")
@click.argument("ref")
@pass_workspace
def restore(ws: Workspace, ref: str) -> None:
    """Make an archived version ready again."""
    click.echo(f"{ws.models.restore(ref).ref} is ready again.")


@models.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete a whole model even if aliases are set.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, ref: str, force: bool, yes: bool) -> None:
    """Delete a version (NAME/V) or a whole model (NAME). `mlops gc` frees the bytes."""
    from mlops_console.registry.models import parse_ref

    name, alias, version = parse_ref(ref)
    if alias:
        raise click.UsageError("Delete by version (NAME/V) or whole model (NAME), not by alias.")
    what = f"{name}/{version}" if version else f"model {name} and all its versions"
    if not yes and not click.confirm(f"Delete {what}?", default=False):
        raise click.Abort()
    with open_workspace(ctx) as ws:
        if version:
            ws.models.delete_version(name, version)
            click.echo(f"Deleted {name}/{version}. Run `mlops gc` to free its artifact.")
        else:
            n = ws.models.delete_model(name, force=force)
            click.echo(f"Deleted model {name} ({n} versions). Run `mlops gc` to free artifacts.")


@models.command("card")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file.")
@pass_workspace
def card(ws: Workspace, ref: str, fmt: str, output: str | None) -> None:
    """The model card of a version: data, metrics, checks, intended use, lineage."""
    import json

    from mlops_console.registry.cards import card_markdown

    data = ws.models.card(ref)
    text = card_markdown(data) if fmt == "md" else json.dumps(data, indent=2, default=str) + "\n"
    if output:
        Path(output).write_text(text)
        click.echo(f"Wrote {output}")
    else:
        click.echo(text, nl=False)


COMMANDS: list[click.Command] = [models]
