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
    rec = mon.ws.deployments.find(deployment)
    if rec is None:
        raise NotFound(f"No deployment {deployment!r}. `mlops deployments list` shows them.")
    mv = mon.ws.models.get_version(rec.model, rec.version)
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
                    "SELECT DISTINCT request_id FROM read_parquet(?, union_by_name = true)",
                    [f"{base}/*.parquet"],
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

    if time_column and not entity_column:
        raise MlopsError("--time-column goes with --entity-column (label rows by entity and time).")
    labels = _model_labels(mon, deployment)
    frame = _read(path)
    overrides: dict[int, str] = {}  # row index -> why it has no request id
    if entity_column:
        frame, overrides = _match_entities(
            mon, deployment, frame, entity_column, time_column, label_column
        )
        id_column, row_column = "__request_id", "__row"
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
            rejected.append(
                {
                    "line": line,
                    "reason": reason,
                    **{k: str(v) for k, v in rec.items() if not k.startswith("__")},
                }
            )

        if rid is None or str(rid).strip() in ("", "nan", "None"):
            reject(overrides.get(i, f"no {id_column}"))
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
                    **({row_column: str(a["row"])} if has_row and row_column else {}),
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


def _match_entities(mon, deployment, frame, entity: str, at: str | None, label_column: str):
    """Give each label row the request id and row of the latest prediction for its entity
    made at or before its time (or the latest at all, without a time column)."""
    import pandas as pd

    for name in (entity, at, label_column):
        if name and name not in frame.columns:
            raise MlopsError(
                f"The label file has no column {name!r}; it has {list(frame.columns)}."
            )
    rows, _, _ = mon.frames(deployment, 0.0, time.time() + 1, kinds=("rows",))
    key = next(
        (c for c in (f"key.{entity}", f"in.{entity}") if rows is not None and c in rows.columns),
        None,
    )
    if key is None:
        raise MlopsError(
            f"No prediction of {deployment} carries {entity!r}. Send it with each request "
            "(columns the model does not use are logged as keys), or label by request id."
        )
    preds = rows[rows[key].notna() & (rows["role"] != "shadow")][[key, "ts", "request_id", "row"]]
    preds = preds.assign(__e=preds[key].astype(str)).sort_values("ts")
    left = frame.reset_index(drop=True).copy()
    left["__i"] = range(len(left))
    left["__e"] = left[entity].astype(str).str.strip()
    overrides: dict[int, str] = {}
    if at:
        numeric = pd.to_numeric(left[at], errors="coerce")  # epoch seconds
        text = left[at].where(numeric.isna())
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")  # ISO 8601 etc.
        # by unit, not by assuming nanoseconds: pandas 3 parses to datetime64[us]
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        left["__t"] = numeric.where(numeric.notna(), seconds.where(parsed.notna()))
        for i in left.index[left["__t"].isna()]:
            overrides[int(i)] = f"{at} {left.at[i, at]!r} is not a time"
        ok = left[left["__t"].notna()].sort_values("__t")
        matched = pd.merge_asof(
            ok, preds, left_on="__t", right_on="ts", by="__e", direction="backward"
        )
    else:
        last = preds.groupby("__e").tail(1)
        matched = left.merge(last, on="__e", how="left")
    found = matched.set_index("__i")[["request_id", "row"]]
    left["__request_id"] = found["request_id"].reindex(left["__i"]).to_numpy()
    left["__row"] = found["row"].reindex(left["__i"]).to_numpy()
    for i in left.index[left["__request_id"].isna()]:
        overrides.setdefault(
            int(i),
            f"no prediction for {entity} {left.at[i, entity]!r}"
            + (f" at or before {left.at[i, at]}" if at else ""),
        )
    left["__row"] = left["__row"].astype("Int64").astype(str).replace("<NA>", "")
    left["__request_id"] = left["__request_id"].astype(object)
    left = left.where(left.notna(), None)
    return left.drop(columns=["__i", "__e"] + (["__t"] if at else [])), overrides


def export_dataset(mon, deployment: str, name: str | None = None) -> dict[str, Any]:
    """Labelled predictions as a versioned dataset (`mlops data`), for pipelines to train on."""
    import pandas as pd

    rec = mon.ws.deployments.find(deployment)
    if rec is None:
        raise NotFound(f"No deployment {deployment!r}. `mlops deployments list` shows them.")
    pipeline = mon.ws.pipelines.for_model(rec.model)
    target, time_col = "label", "ts"
    if pipeline:
        target, time_col = pipeline.spec.data.target, pipeline.spec.data.time_column or "ts"
    mon.collect(deployment)
    rows, _, feedback = mon.frames(deployment, 0.0, time.time() + 1)
    if rows is None or feedback is None:
        raise MlopsError(
            f"{deployment} has no labelled predictions yet: send labels with "
            f"`mlops monitor labels {deployment} FILE` or POST /feedback."
        )
    # the first label for a row wins: a later one cannot rewrite the ground truth
    fb = feedback.sort_values("ts", kind="stable").drop_duplicates(
        ["request_id", "row"], keep="first"
    )
    rows = rows[rows["role"] != "shadow"].drop_duplicates(["request_id", "row"], keep="last")
    joined = rows.merge(fb[["request_id", "row", "label"]], on=["request_id", "row"])
    if not len(joined):
        raise MlopsError(f"None of the labels of {deployment} match a collected prediction yet.")
    out = pd.DataFrame({c[3:]: joined[c] for c in joined.columns if c.startswith("in.")})
    for c in joined.columns:
        if c.startswith("key.") and c[4:] not in out:  # entity keys sent with the requests
            out[c[4:]] = joined[c]
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
