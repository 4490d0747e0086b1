"""mlops data add | ingest | list | show | versions | diff | rebuild | edit | remove."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
    kv,
    num,
    output_options,
    pass_workspace,
    table,
    when,
)

if TYPE_CHECKING:
    from mlops_console.data.records import Dataset, IngestResult
    from mlops_console.workspace import Workspace


def _stage(text: str) -> None:
    click.echo(f"  .. {text}", err=True)


@click.group()
def data() -> None:
    """Versioned datasets: contracts, quarantine, profiles, diffs."""


@data.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--timestamp", help="The event-time column.")
@click.option("--entity", "entities", multiple=True, help="An entity key column (repeatable).")
@click.option("--description", default="")
@click.option("--no-ingest", is_flag=True, help="Only register; ingest later.")
@click.option("--delimiter", help="CSV field delimiter, e.g. ';' or '\\t' (default: sniffed).")
@click.option("--decimal", type=click.Choice([".", ","]), help="Decimal mark (default: sniffed).")
@click.option("--thousands", help="Thousands separator, e.g. '.' in 1.234,56.")
@click.option(
    "--na",
    "na_values",
    multiple=True,
    help="A spelling of a missing value besides the empty field, NA, n/a, NULL, NaN "
    "(repeatable), e.g. --na '-'.",
)
@click.option("--encoding", help="Text encoding, e.g. cp1252 or latin-1 (default: sniffed).")
@click.option(
    "--date-format",
    "date_formats",
    multiple=True,
    help="strptime format of dates besides ISO 8601, e.g. '%d.%m.%Y' (repeatable: a value "
    "may match any of them).",
)
@json_option
@pass_workspace
def add(
    ws: Workspace,
    name: str,
    source: str,
    timestamp: str | None,
    entities: tuple[str, ...],
    description: str,
    no_ingest: bool,
    as_json: bool,
    **how: Any,
) -> None:
    """Register dataset NAME from SOURCE (a CSV/Parquet path or glob) and ingest v1.

    How CSV files are read is sniffed from the first file unless given; it is stored
    with the dataset and used on every ingest."""
    from mlops_console.data.read_options import FLAGS, describe

    ds = ws.data.add(
        name,
        source,
        timestamp=timestamp,
        entities=list(entities),
        description=description,
        read_options={k: v for k, v in how.items() if v},
    )
    opts = ds.read_options
    if opts and not as_json:
        sniffed = opts.get("sniffed")
        click.echo(
            f"read with {describe(opts)} "
            + (
                f"(sniffed; {'/'.join(dict.fromkeys(FLAGS.values()))} override)"
                if sniffed
                else "(as given)"
            )
        )
    result = None if no_ingest else _first_ingest(ws, name, None if as_json else _stage)
    if as_json:
        emit_json({"dataset": ws.data.get(name).to_dict(), "ingest": _ingest_json(result)})
        return
    click.echo(f"Registered dataset {ds.name} from {ds.source}.")
    if result:
        _report_ingest(result)


def _read_with(ds: Dataset) -> str:
    from mlops_console.data.read_options import describe

    opts = ds.read_options or {}
    return describe(opts) + (
        " (sniffed: " + ", ".join(opts["sniffed"]) + ")" if opts.get("sniffed") else ""
    )


def _first_ingest(ws: Workspace, name: str, stage: Callable[[str], None] | None) -> IngestResult:
    """Ingest v1 of a dataset just registered; if that fails, nothing stays registered, so
    the name can be used again once the file is fixed."""
    from mlops_console.errors import MlopsError

    try:
        return ws.data.ingest(name, stage=stage or (lambda s: None))
    except BaseException as exc:
        if not ws.data.versions(name):
            ws.data.remove(name)
        if not isinstance(exc, MlopsError):
            raise
        try:
            said = type(exc)(f"{exc} Nothing was registered; fix that and add it again.")
        except TypeError:  # a subclass with another constructor: its own words will do
            raise exc from None
        raise said from None


@data.command("ingest")
@click.argument("name")
@click.option("--force", is_flag=True, help="Accept the version even if it breaks the contract.")
@json_option
@pass_workspace
def ingest(ws: Workspace, name: str, force: bool, as_json: bool) -> None:
    """Take a new version of NAME from its source files (unchanged files: no new version)."""
    result = ws.data.ingest(name, force=force, stage=(lambda s: None) if as_json else _stage)
    if as_json:
        emit_json(_ingest_json(result))
        return
    _report_ingest(result)
    if result.version.status == "quarantined":
        raise click.exceptions.Exit(1)


def _ingest_json(result: IngestResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "created": result.created,
        "message": result.message,
        "version": result.version.to_dict(),
    }


def _report_ingest(result: IngestResult) -> None:
    click.echo(result.message)
    failed = result.version.failed_rules
    if failed:
        _rules_table(failed)


def _rules_table(rules: list[dict[str, Any]]) -> None:
    table(
        ["rule", "column", "result", "detail"],
        [
            (r["rule"], r["column"] or "-", "pass" if r["passed"] else "FAIL", r["detail"])
            for r in rules
        ],
    )


@data.command("list")
@output_options
@pass_workspace
def list_datasets(ws: Workspace) -> Output:
    """List datasets with their current version."""
    found = ws.data.list()
    return Output(
        {"datasets": [d.to_dict() for d in found]},
        lambda: table(
            ["dataset", "current", "versions", "quarantined", "source", "timestamp", "entities"],
            [
                (
                    d.name,
                    f"v{d.current_version}" if d.current_version else "-",
                    d.versions,
                    d.quarantined or "-",
                    d.source,
                    d.timestamp or "-",
                    ", ".join(d.entities) or "-",
                )
                for d in found
            ],
            empty="No datasets. `mlops data add NAME data/file.csv` registers one.",
        ),
    )


@data.command("show")
@click.argument("name")
@click.option("-v", "--version", "version", type=int, help="A version (default: the latest).")
@output_options
@pass_workspace
def show(ws: Workspace, name: str, version: int | None) -> Output:
    """A dataset's version: status, contract report (why it is quarantined), profile."""
    ds = ws.data.get(name)
    versions = ws.data.versions(name)
    if version is None and versions:
        version = versions[-1].version
    dv = ws.data.version(name, version) if version else None
    prof = ws.data.profile(name, dv.version) if dv else {}
    return Output(
        {"dataset": ds.to_dict(), "version": dv.to_dict() if dv else None, "profile": prof},
        lambda: _show_version(name, ds, dv, prof),
    )


def _show_version(name: str, ds: Dataset, dv: Any, prof: dict[str, Any]) -> None:
    kv(
        [
            ("dataset", ds.name),
            ("source", ds.source),
            ("contract", ds.contract),
            ("read with", _read_with(ds)),
            (
                "current",
                f"v{ds.current_version}" if ds.current_version else "none accepted yet",
            ),
        ]
    )
    if dv is None:
        click.echo("\nNo versions yet: `mlops data ingest " + name + "`.")
        return
    click.echo(
        f"\nVersion {dv.version}: {dv.status.upper()}, {dv.rows} rows, ingested {when(dv.created_at)}"
    )
    click.echo("Sources: " + ", ".join(f"{s['path']} ({s['sha256'][:12]})" for s in dv.sources))
    if dv.status == "quarantined":
        click.echo("This version broke its contract and is not used. Failing rules:")
        _rules_table(dv.failed_rules)
        click.echo(
            f"Fix the data (or {ds.contract}) and ingest again, or accept it with "
            f"`mlops data ingest {name} --force`."
        )
    elif dv.status == "forced":
        click.echo("Accepted with --force although these rules fail:")
        _rules_table(dv.failed_rules)
    click.echo("\nProfile")
    table(
        ["column", "type", "nulls", "distinct", "min", "median", "max", "top"],
        [
            (
                c,
                p["type"],
                p["nulls"],
                p["distinct"],
                num(p.get("min")),
                num(p.get("quantiles", {}).get("0.5")),
                num(p.get("max")),
                ", ".join(f"{t['value']}:{t['count']}" for t in p.get("top", [])[:3]),
            )
            for c, p in prof.get("columns", {}).items()
        ],
    )


@data.command("versions")
@click.argument("name")
@click.option("--verify", is_flag=True, help="Hash every snapshot (default: a quick look).")
@json_option
@pass_workspace
def versions(ws: Workspace, name: str, verify: bool, as_json: bool) -> None:
    """Every version of a dataset, and whether its snapshot is intact."""
    found = ws.data.versions(name)
    current = ws.data.get(name).current_version
    states = {v.version: ws.data.snapshot_state(v, full=verify) for v in found}
    bad = [v for v in found if states[v.version] not in ("ok", "verified")]
    if as_json:
        emit_json(
            {
                "dataset": name,
                "current_version": current,
                "versions": [{**v.to_dict(), "snapshot": states[v.version]} for v in found],
            }
        )
        if bad and verify:
            raise click.exceptions.Exit(1)
        return
    advice: list[str] = []
    if bad:
        from mlops_console.data.snapshots import snapshot_error

        # what to do for each: rebuild it, or restore it (its sources changed)
        advice = [str(snapshot_error(ws.data, v, states[v.version])) for v in bad]
    table(
        ["version", "status", "rows", "digest", "failed rules", "snapshot", "ingested"],
        [
            (
                f"v{v.version}" + (" *" if v.version == current else ""),
                v.status,
                v.rows,
                v.digest[:12],
                len(v.failed_rules) or "-",
                # the quick look sees a missing or cut file, not a flipped bit
                {"ok": "looks ok", "verified": "verified"}.get(
                    states[v.version], states[v.version].upper()
                ),
                when(v.created_at),
            )
            for v in found
        ],
        empty="No versions yet.",
    )
    for line in advice:
        click.echo(line)
    if not verify and not bad:
        click.echo("A quick look (size and Parquet framing); --verify re-hashes every snapshot.")
    if bad and verify:
        raise click.exceptions.Exit(1)


@data.command("rebuild")
@click.argument("name")
@click.argument("version", type=int, required=False)
@output_options
@pass_workspace
def rebuild(ws: Workspace, name: str, version: int | None) -> Output:
    """Rebuild the Parquet snapshot of NAME's VERSION (default: the current one) from the
    source files it was taken from, if they still hash as recorded."""
    done = ws.data.rebuild(name, version)
    return Output(
        {
            "dataset": name,
            "version": done.version.version,
            "was": done.was,
            "rewritten": done.rewritten,
            "digest_changed": done.digest_changed,
            "message": done.message,
        },
        lambda: click.echo(done.message),
    )


@data.command("edit")
@click.argument("name")
@click.option("--source", help="Another CSV/Parquet path or glob.")
@click.option("--timestamp", help="The event-time column ('' for none).")
@click.option("--entities", help="Entity key columns, comma-separated ('' for none).")
@click.option("--description")
@output_options
@pass_workspace
def edit(
    ws: Workspace,
    name: str,
    source: str | None,
    timestamp: str | None,
    entities: str | None,
    description: str | None,
) -> Output:
    """Change a dataset's source, timestamp, entities or description; versions taken
    already stay as they are, the next ingest uses the new fields."""
    keys = None if entities is None else [e.strip() for e in entities.split(",") if e.strip()]
    ds, notes = ws.data.edit(
        name, source=source, timestamp=timestamp, entities=keys, description=description
    )

    def human() -> None:
        click.echo(f"Dataset {name} updated; `mlops data ingest {name}` takes a version with it.")
        for note in notes:
            click.echo(f"Note: {note}")

    return Output({"dataset": ds.to_dict(), "notes": notes}, human)


@data.command("remove")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@output_options
@pass_workspace
def remove(ws: Workspace, name: str, yes: bool) -> Output:
    """Unregister dataset NAME and its versions (refused while a registered model was
    trained on it). Its snapshots are left for `mlops gc`."""
    ds = ws.data.get(name)
    if not yes and not ws.data.models_using(name):  # in use: refused without asking
        click.confirm(f"Remove dataset {name} and its {ds.versions} version(s)?", abort=True)
    done = ws.data.remove(name)
    return Output(done, lambda: _report_removed(name, done))


def _report_removed(name: str, done: dict[str, Any]) -> None:
    runs = done["runs_that_read_it"]
    click.echo(
        f"Removed dataset {name} and its {done['versions_removed']} version(s)"
        + (f"; the {runs} run(s) that read it keep their records" if runs else "")
        + f". The snapshots in {done['lake']} stay until `mlops gc` removes them."
        + (
            f" Its contract {done['contract']} is kept: delete it before adding {name} "
            "again with other data."
            if done["contract"]
            else ""
        )
    )


@data.command("diff")
@click.argument("name")
@click.argument("v1", type=int, required=False)
@click.argument("v2", type=int, required=False)
@output_options
@pass_workspace
def diff(ws: Workspace, name: str, v1: int | None, v2: int | None) -> Output:
    """Schema changes, row counts and profile shifts between two versions."""
    d = ws.data.diff(name, v1, v2)
    return Output(d, lambda: _show_diff(name, d))


def _show_diff(name: str, d: dict[str, Any]) -> None:
    click.echo(f"{name}: v{d['from']} -> v{d['to']}, rows {d['rows'][0]} -> {d['rows'][1]}")
    s = d["schema"]
    for label, key in (("added", "added"), ("removed", "removed")):
        if s[key]:
            click.echo(f"columns {label}: {', '.join(s[key])}")
    for col, (a, b) in s["type_changed"].items():
        click.echo(f"type changed: {col} {a} -> {b}")
    rows = []
    for col, c in d["columns"].items():
        psi_v = c.get("psi")
        flag = (
            ""
            if psi_v is None
            else ("  <- shifted" if psi_v > 0.2 else ("  (moderate)" if psi_v > 0.1 else ""))
        )
        center = c.get("median") or ["", ""]
        rows.append(
            (
                col,
                num(psi_v) + flag,
                f"{num(center[0])} -> {num(center[1])}",
                f"{num(c['null_rate'][0])} -> {num(c['null_rate'][1])}",
                ", ".join(c.get("new_categories", [])) or "-",
            )
        )
    table(["column", "psi", "median", "null rate", "new categories"], rows)


COMMANDS: list[click.Command] = [data]
