"""Ground truth: label files joined to predictions, and the feedback dataset.

A label file (CSV or Parquet) names each prediction by its request id (and row number
within the request, default 0) and gives the label. Nothing in it is lost: the file is
kept under `.mlops/monitoring/DEPLOYMENT/labels/received/`, accepted rows become feedback
(Parquet, like labels sent to `POST /feedback`), and rejected rows (no id, a label of the
wrong type or not one of the model's classes, a duplicate) are written with their reason to
`labels/rejected-*.csv`. Rows whose request id matches no prediction yet are kept and
reported: they join once those predictions are collected.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from mlops_console.errors import MlopsError, NotFound
from mlops_console.monitoring import collect as col


def _read(path: Path):
    import pandas as pd

    if not path.exists():
        raise MlopsError(f"No label file {path}.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # unreadable file: say so, keep nothing half-done
        raise MlopsError(f"{path} cannot be read as CSV or Parquet: {exc}") from None


def _model_labels(mon, deployment: str):
    rec = mon.ws.deployments._record(deployment)
    if rec is None:
        raise NotFound(f"No deployment {deployment!r}. `mlops deployments list` shows them.")
    mv = mon.ws.models.get_version(rec["model"], rec["version"])
    return mv.signature.get("labels")


def _known_ids(mon, deployment: str) -> set[str]:
    import duckdb

    ids: set[str] = set()
    base = col.monitor_dir(mon.ws, deployment) / "rows"
    if any(base.glob("*.parquet")):
        con = duckdb.connect()
        try:
            ids = {
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT request_id FROM read_parquet('{base}/*.parquet', "
                    "union_by_name = true)"
                ).fetchall()
            }
        finally:
            con.close()
    for rec in col.live_records(mon.ws, deployment)["rows"]:
        ids.add(str(rec.get("request_id", "")))
    return ids


def import_labels(
    mon,
    deployment: str,
    path: Path,
    id_column: str,
    label_column: str,
    row_column: str | None,
    entity_column: str | None,
    time_column: str | None,
) -> dict[str, Any]:
    import pandas as pd

    if entity_column or time_column:
        raise MlopsError(
            "Matching labels by entity key and time needs the entity in the prediction log; "
            "this version logs model inputs only. Send request ids (the x-request-id header "
            "of each prediction) in the label file."
        )
    labels = _model_labels(mon, deployment)
    frame = _read(path)
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        raise MlopsError(
            f"{path} has no column(s) {missing}; it has {list(frame.columns)}. Name them with "
            "--id-column and --label-column."
        )
    col.collect(mon.ws, deployment)
    folder = col.monitor_dir(mon.ws, deployment) / "labels"
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
    kept = folder / "received" / f"{stamp}-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, kept)

    by_str = {str(v): v for v in labels} if labels is not None else None
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    has_row = row_column is not None and row_column in frame.columns
    for i, rec in enumerate(frame.to_dict("records")):
        line = i + 2 if path.suffix.lower() == ".csv" else i + 1
        rid = rec.get(id_column)
        raw = rec.get(label_column)

        def reject(reason: str, rec=rec, line=line) -> None:
            rejected.append({"line": line, "reason": reason, **{k: str(v) for k, v in rec.items()}})

        if rid is None or str(rid).strip() in ("", "nan", "None"):
            reject(f"no {id_column}")
            continue
        if raw is None or str(raw).strip() in ("", "nan", "None"):
            reject(f"no {label_column}")
            continue
        row = 0
        if has_row:
            try:
                row = int(str(rec[row_column]).strip() or 0)
                if row < 0:
                    raise ValueError
            except ValueError:
                reject(f"{row_column} {rec[row_column]!r} is not a row number (0, 1, ...)")
                continue
        if by_str is not None:
            key = str(raw).strip()
            if key not in by_str and key.endswith(".0") and key[:-2] in by_str:
                key = key[:-2]
            if key not in by_str:
                reject(f"label {raw!r} is not one of the model's classes {list(by_str)}")
                continue
            value = by_str[key]
        else:
            try:
                value = float(str(raw).strip())
            except ValueError:
                reject(f"label {raw!r} is not a number (the model is a regressor)")
                continue
        accepted.append({"line": line, "request_id": str(rid).strip(), "row": row, "label": value})
    # duplicates: the last row of a (request id, row) pair counts; the earlier ones are kept
    # with the rejects, so a correction later in the file wins
    last: dict[tuple[str, int], int] = {}
    for i, a in enumerate(accepted):
        last[(a["request_id"], a["row"])] = i
    unique = []
    for i, a in enumerate(accepted):
        if last[(a["request_id"], a["row"])] != i:
            rejected.append(
                {
                    "line": a["line"],
                    "reason": "duplicate request_id and row: line "
                    f"{accepted[last[(a['request_id'], a['row'])]]['line']} (later) counts",
                    id_column: a["request_id"],
                    label_column: str(a["label"]),
                    **({row_column: str(a["row"])} if has_row else {}),
                }
            )
        else:
            unique.append(a)
    known = _known_ids(mon, deployment)
    unmatched = [a for a in unique if a["request_id"] not in known]
    now = time.time()
    if unique:
        col.write_parquet(
            col.feedback_table([{"ts": now, "source": path.name, **a} for a in unique]),
            col.monitor_dir(mon.ws, deployment) / "feedback" / f"labels-{stamp}.parquet",
        )
    rejects_path = None
    if rejected:
        rejects_path = folder / f"rejected-{stamp}-{path.stem}.csv"
        pd.DataFrame(sorted(rejected, key=lambda r: r["line"])).to_csv(rejects_path, index=False)
    reasons: dict[str, int] = {}
    for r in rejected:
        kind = (
            r["reason"].split(": line ")[0] if r["reason"].startswith("duplicate") else r["reason"]
        )
        kind = kind if len(kind) < 80 else kind[:77] + "..."
        reasons[kind] = reasons.get(kind, 0) + 1
    return {
        "file": str(path),
        "kept_as": str(kept),
        "rows": len(frame),
        "accepted": len(unique),
        "matched": len(unique) - len(unmatched),
        "unmatched": len(unmatched),
        "unmatched_examples": [a["request_id"] for a in unmatched[:5]],
        "rejected": len(rejected),
        "rejected_reasons": reasons,
        "rejected_file": str(rejects_path) if rejects_path else None,
    }


def export_dataset(mon, deployment: str, name: str | None = None) -> dict[str, Any]:
    """Labelled predictions as a versioned dataset (`mlops data`), for pipelines to train on."""
    import pandas as pd

    from mlops_console.config import load_pipeline
    from mlops_console.monitoring.service import pipeline_for_model

    rec = mon.ws.deployments._record(deployment)
    if rec is None:
        raise NotFound(f"No deployment {deployment!r}. `mlops deployments list` shows them.")
    pipeline = pipeline_for_model(mon.ws, rec["model"])
    target, time_col = "label", "ts"
    if pipeline:
        try:
            spec = load_pipeline(mon.ws.pipeline_path(pipeline))
            target, time_col = spec.data.target, spec.data.time_column or "ts"
        except (MlopsError, OSError):
            pass
    mon.collect(deployment)
    rows, _, feedback = mon._frames(deployment, 0.0, time.time() + 1)
    if rows is None or feedback is None:
        raise MlopsError(
            f"{deployment} has no labelled predictions yet: send labels with "
            f"`mlops monitor labels {deployment} FILE` or POST /feedback."
        )
    fb = feedback.drop_duplicates(["request_id", "row"], keep="last")
    rows = rows[rows["role"] != "shadow"].drop_duplicates(["request_id", "row"], keep="last")
    joined = rows.merge(fb[["request_id", "row", "label"]], on=["request_id", "row"])
    if not len(joined):
        raise MlopsError(f"None of the labels of {deployment} match a collected prediction yet.")
    out = pd.DataFrame({c[3:]: joined[c] for c in joined.columns if c.startswith("in.")})
    out[target] = [json.loads(v) for v in joined["label"]]
    out[time_col] = pd.to_datetime(joined["ts"], unit="s")
    out["request_id"] = joined["request_id"].to_numpy()
    name = name or f"{deployment}_feedback"
    dest = mon.ws.root / "data" / "feedback" / f"{name}.parquet"
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(dest, index=False)
    try:
        mon.ws.data.get(name)
    except NotFound:
        mon.ws.data.add(
            name,
            str(dest.relative_to(mon.ws.root)),
            timestamp=time_col,
            description=f"Labelled predictions of deployment {deployment}",
        )
    result = mon.ws.data.ingest(name)
    return {"dataset": name, "rows": len(out), "path": str(dest), "ingest": result.message}
