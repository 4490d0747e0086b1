"""`mlops predict`: batch scoring of a dataset version or a file, recorded as a run.

Outputs: a .parquet or .csv file, or a table in a database: `sqlite:PATH#TABLE` or
`duckdb:PATH#TABLE` (the table is replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import MlopsError, NotFound

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def batch_score(ws: Workspace, ref: str, source: str, output: str) -> dict[str, Any]:
    from mlops_console.data.reading import read_file

    mv = ws.models.resolve(ref)
    bundle = ws.models.bundle(mv.ref)
    dv = None
    try:
        dv = ws.data.version(source)
        frame = ws.data.read(source, dv.version)
        described = f"dataset {source} v{dv.version}"
    except NotFound:
        path = Path(source)
        if not path.exists() and (ws.root / source).exists():
            path = ws.root / source  # relative to the workspace
        if not path.exists():
            raise MlopsError(
                f"{source!r} is neither a dataset nor a file; `mlops data list` shows the datasets."
            ) from None
        frame = read_file(path, source).to_pandas()
        described = source
    out = frame.copy()
    out["prediction"] = bundle.predict(frame)
    if bundle.task == "classification" and len(bundle.labels or []) == 2:
        # the positive class the model was trained and measured for (the second label
        # for bundles from before it was recorded)
        labels = list(bundle.labels)
        positive = bundle.signature.get("positive_class", labels[1])
        column = labels.index(positive) if positive in labels else 1
        out["probability"] = bundle.predict_proba(frame)[:, column]
    out["model_version"] = mv.ref
    where = _write(out, output)
    with ws.runs.start(
        experiment="batch-scoring",
        params={"model": mv.ref, "input": described, "output": where, "rows": len(out)},
        tags={"kind": "batch-scoring", "model": mv.ref},
    ) as run:
        if dv is not None:
            ws.data.record_use(run, dv)
        run.log_metric("rows", len(out))
    return {
        "model": mv.ref,
        "input": described,
        "output": where,
        "rows": len(out),
        "run_id": run.id,
    }


def _write(frame, output: str) -> str:
    if output.startswith(("sqlite:", "duckdb:")):
        kind, rest = output.split(":", 1)
        path, sep, table = rest.rpartition("#")
        if not sep or not table.isidentifier():
            raise MlopsError(f"{output!r}: give the table as {kind}:PATH#TABLE (a plain name).")
        _make_parent(path)
        if kind == "sqlite":
            import sqlite3

            with sqlite3.connect(path) as con:
                frame.to_sql(table, con, if_exists="replace", index=False)
        else:
            import duckdb

            duck = duckdb.connect(path)
            try:
                duck.register("scored", frame)
                duck.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM scored')
            finally:
                duck.close()
        return output
    if not output.endswith((".parquet", ".pq", ".csv")):
        raise MlopsError(
            f"{output!r}: write .parquet, .csv, sqlite:PATH#TABLE or duckdb:PATH#TABLE."
        )
    _make_parent(output)
    if output.endswith(".csv"):
        frame.to_csv(output, index=False)
    else:
        frame.to_parquet(output, index=False)
    return str(Path(output).resolve())


def _make_parent(path: str) -> None:
    """A [score] output in a folder that does not exist yet: the folder is created."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlopsError(
            f"Cannot create the output folder {folder} ({exc.strerror}); pick another output."
        ) from None
