"""mlops features list | show | materialize | get | get-training."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_console.cli.output import emit_json, kv, num, open_workspace, table, when


@click.group()
def features() -> None:
    """Feature views: point-in-time training frames and online lookups."""


@features.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_views(ctx, as_json) -> None:
    """List feature views (features/*.toml) and their online state."""
    with open_workspace(ctx) as ws:
        views = ws.features.views()
        online = {o["view"]: o for o in ws.features.online_status()}
    rows = [
        {
            "name": n,
            "entities": v.entities,
            "source": v.source or "sql",
            "ttl": v.ttl,
            "online": online.get(n),
        }
        for n, v in views.items()
    ]
    if as_json:
        emit_json({"views": rows})
        return
    table(
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
    )


@features.command("show")
@click.argument("view")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx, view, as_json) -> None:
    """A feature view: keys, timestamp, TTL, features and the dataset versions it reads."""
    with open_workspace(ctx) as ws:
        d = ws.features.describe(view)
    if as_json:
        emit_json(d)
        return
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def materialize(ctx, views, as_json) -> None:
    """Load the latest values per entity into the online store (incremental)."""
    with open_workspace(ctx) as ws:
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def get(ctx, view, keys, as_json) -> None:
    """Online lookup: the latest feature values of one entity."""
    entity = {}
    for item in keys:
        k, sep, v = item.partition("=")
        if not sep:
            raise click.UsageError(f"--key expects COL=VALUE, got {item!r}.")
        entity[k] = _coerce(v)
    with open_workspace(ctx) as ws:
        rec = ws.features.online(view, entity)
    if as_json:
        emit_json({"view": view, "key": entity, "features": rec})
        return
    if rec is None:
        click.echo(f"No values for {entity} in {view} (unknown entity, or not materialized since).")
        ctx.exit(1)
    kv([(k, num(v)) for k, v in rec.items()])


def _coerce(v: str):
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
def get_training(ctx, entities_path, refs, timestamp, full_names, output) -> None:
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
