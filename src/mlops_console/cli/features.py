"""mlops features list | show | materialize | get | get-training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
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
def features() -> None:
    """Feature views: point-in-time training frames and online lookups."""


@features.command("list")
@output_options
@pass_workspace
def list_views(ws: Workspace) -> Output:
    """List feature views (features/*.toml) and their online state."""
    views = ws.features.views()
    online = {o["view"]: o for o in ws.features.online_status()}
    rows: list[dict[str, Any]] = [
        {
            "name": n,
            "entities": v.entities,
            "source": v.source or "sql",
            "ttl": v.ttl,
            "online": online.get(n),
        }
        for n, v in views.items()
    ]
    return Output(
        {"views": rows},
        lambda: table(
            ["view", "entities", "source", "ttl", "online entities", "materialized"],
            [
                (
                    r["name"],
                    ", ".join(r["entities"]),
                    r["source"],
                    r["ttl"],
                    r["online"]["entities"] if r["online"] else "-",
                    when(r["online"]["updated_at"]) if r["online"] else "never",
                )
                for r in rows
            ],
            empty="No feature views. Add features/NAME.toml (see `mlops init --sample`).",
        ),
    )


@features.command("show")
@click.argument("view")
@output_options
@pass_workspace
def show(ws: Workspace, view: str) -> Output:
    """A feature view: keys, timestamp, TTL, features and the dataset versions it reads."""
    d = ws.features.describe(view)
    return Output(d, lambda: _show_view(d))


def _show_view(d: dict[str, Any]) -> None:
    kv(
        [
            ("view", d["name"]),
            ("entities", ", ".join(d["entities"])),
            ("timestamp", d["timestamp"]),
            ("created", d["created_timestamp"] or "-"),
            ("ttl", f"{d['ttl_seconds']:.0f}s" if d["ttl_seconds"] else "none"),
            ("features", ", ".join(d["features"])),
            ("reads", ", ".join(f"{x['name']} v{x['version']}" for x in d["datasets"]) or "-"),
        ]
    )
    if d["sql"]:
        click.echo("\n" + d["sql"].strip())


@features.command("materialize")
@click.argument("views", nargs=-1)
@json_option
@pass_workspace
def materialize(ws: Workspace, views: tuple[str, ...], as_json: bool) -> None:
    """Load the latest values per entity into the online store (incremental)."""
    res = ws.features.materialize(
        list(views) or None,
        stage=(lambda s: None) if as_json else (lambda s: click.echo(f"  .. {s}", err=True)),
    )
    if as_json:
        emit_json({"materialized": res})
        return
    table(
        ["view", "rows written", "entities", "up to", "from", "rebuilt"],
        [
            (
                r["view"],
                r["rows_written"],
                r["entities"],
                r["watermark"] or "-",
                ", ".join(r["sources"]),
                "yes" if r["rebuilt"] else "no",
            )
            for r in res
        ],
        empty="No feature views.",
    )


@features.command("get")
@click.argument("view")
@click.option(
    "-k",
    "--key",
    "keys",
    multiple=True,
    required=True,
    metavar="COL=VALUE",
    help="Entity key; repeat for composite keys.",
)
@output_options
def get(view: str, keys: tuple[str, ...]) -> Output:
    """Online lookup: the latest feature values of one entity."""
    entity = {}
    for item in keys:
        k, sep, v = item.partition("=")
        if not sep:
            raise click.UsageError(f"--key expects COL=VALUE, got {item!r}.")
        entity[k] = _coerce(v)
    with open_workspace(click.get_current_context()) as ws:
        rec = ws.features.online(view, entity)

    def human() -> None:
        if rec is None:
            click.echo(
                f"No values for {', '.join(f'{k}={v}' for k, v in entity.items())} in {view} "
                "(unknown entity, or not materialized since)."
            )
            raise click.exceptions.Exit(1)
        kv([(k, num(v)) for k, v in rec.items()])

    return Output({"view": view, "key": entity, "features": rec}, human)


def _coerce(v: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@features.command("get-training")
@click.option(
    "-e",
    "--entities",
    "entities_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV or Parquet with the entity keys and a timestamp per row.",
)
@click.option(
    "-f",
    "--features",
    "refs",
    required=True,
    multiple=True,
    help="VIEW:FEATURE (or VIEW:*); repeat or separate with commas.",
)
@click.option("--timestamp", help="The entity file's timestamp column (default: event_timestamp).")
@click.option("--full-names", is_flag=True, help="Name columns VIEW__FEATURE.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write CSV or Parquet here.")
@click.pass_context
def get_training(
    ctx: click.Context,
    entities_path: str,
    refs: tuple[str, ...],
    timestamp: str | None,
    full_names: bool,
    output: str | None,
) -> None:
    """A point-in-time correct training frame: each entity row gets the feature values
    that were known at its timestamp."""
    from mlops_console.data.reading import read_file

    frame = read_file(Path(entities_path), entities_path).to_pandas()
    feats = [r.strip() for item in refs for r in item.split(",") if r.strip()]
    with open_workspace(ctx) as ws:
        out = ws.features.training_frame(
            frame, feats, timestamp_column=timestamp, full_feature_names=full_names
        )
    if output:
        if output.endswith((".parquet", ".pq")):
            out.to_parquet(output, index=False)
        else:
            out.to_csv(output, index=False)
        click.echo(f"Wrote {len(out)} rows x {len(out.columns)} columns to {output}", err=True)
    else:
        click.echo(out.to_csv(index=False), nl=False)


COMMANDS: list[click.Command] = [features]
