"""A pipeline spec resolved against its data, before anything is fitted.

`prepare` reads the data (a dataset version or a file), checks the target, the
features and the classes, picks the positive class and splits off the holdout; every
mistake a user can make in the spec or the data is reported here, with the file, the key
and what to do, before training starts. `training/runner.py` trains on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.config import parse
from mlops_console.errors import ConfigError, MlopsError
from mlops_console.pipeline_spec import PipelineSpec

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace

Stage = Callable[[str], None]


@dataclass
class Prepared:
    """A spec resolved against its data: the frames every later step uses."""

    spec: PipelineSpec
    spec_path: Path | None
    frame: Any
    features: list[str]
    numeric: list[str]
    categorical: list[str]
    X_train: Any
    y_train: Any
    X_hold: Any
    y_hold: Any
    sensitive_hold: Any
    signature: dict[str, Any]
    hold_frame: Any = None  # the raw holdout rows (all columns), for checks on raw input
    dataset_version: Any = None
    data_source: str = ""
    # a binary target's class of interest (what roc_auc, f1, precision... describe)
    positive_class: Any = None
    positive_reason: str = ""  # how it was chosen, in the user's words


def apply_overrides(spec: PipelineSpec, overrides: dict[str, Any], source: Any) -> PipelineSpec:
    data = spec.model_dump()
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {dotted}: {part!r} is not a section of the pipeline.")
            node = node[part]
        node[parts[-1]] = value
    return parse(PipelineSpec, data, f"{source} (with --set)")


def load_spec(
    ws: Workspace, pipeline: str, overrides: dict[str, Any] | None
) -> tuple[PipelineSpec, Path]:
    found = ws.pipelines.get(pipeline)
    spec, path = found.spec, found.path
    if overrides:
        spec = apply_overrides(spec, overrides, path)
    return spec, path


def prepare(
    ws: Workspace,
    spec: PipelineSpec,
    spec_path: Path | None,
    dataset_version: int | None = None,
    stage: Stage = lambda s: None,
) -> Prepared:
    """Read the data and check everything before any training starts."""
    from mlops_console.registry.signature import prepare_inputs
    from mlops_console.training.build import build_estimator
    from mlops_console.training.signature import classification_outputs, infer_inputs

    where = spec_path.name if spec_path else spec.name
    try:
        build_estimator(spec, ws.root)  # fails now if the estimator does not import
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    d = spec.data
    dv = None
    if d.dataset:
        dv = ws.data.version(d.dataset, dataset_version)
        if not dv.usable:
            raise MlopsError(f"{d.dataset} v{dv.version} is quarantined; it cannot be trained on.")
        frame = ws.data.read(d.dataset, dv.version)
        source = f"dataset {d.dataset} v{dv.version}"
    else:
        from mlops_console.data.reading import read_file

        assert d.path is not None  # the spec names a dataset or a path (config checks it)
        path = (ws.root / d.path).resolve()
        if not path.exists():
            raise ConfigError(f"{where}: [data].path {d.path!r} does not exist.")
        frame = read_file(path, d.path).to_pandas()
        source = d.path
    cols = set(frame.columns)
    named = [
        ("target", d.target),
        ("time_column", d.time_column),
        ("entity_column", d.entity_column),
        ("sensitive", d.sensitive),
    ]
    for key, col in named:
        if col and col not in cols:
            raise ConfigError(
                f"{where}: [data].{key} {col!r} is not a column of {source} "
                f"(columns: {', '.join(frame.columns)})."
            )
    missing = [f for f in d.features + d.exclude if f not in cols]
    if missing:
        raise ConfigError(
            f"{where}: [data] names column(s) {', '.join(missing)} that {source} does not "
            f"have (columns: {', '.join(frame.columns)})."
        )
    view_cols: list[str] = []
    if d.feature_views:
        stage(f"join {len(d.feature_views)} feature(s) point-in-time")
        # Joined on the entity keys and times alone; named VIEW__FEATURE so they never
        # collide with the dataset's own columns.
        keys = frame[[d.entity_column, d.time_column]]
        joined = ws.features.training_frame(
            keys, d.feature_views, timestamp_column=d.time_column, full_feature_names=True
        )
        view_cols = [c for c in joined.columns if c not in keys.columns]
        frame = frame.assign(**{c: joined[c].to_numpy() for c in view_cols})
    if d.time_column:
        from mlops_console.data.reading import to_times

        frame = frame.assign(
            **{d.time_column: to_times(frame[d.time_column], d.time_column, source)}
        )
        frame = frame.sort_values(d.time_column, kind="stable").reset_index(drop=True)
    frame = frame[frame[d.target].notna()].reset_index(drop=True)
    if len(frame) < spec.validation.min_rows:
        raise MlopsError(
            f"{where}: only {len(frame)} labelled rows in {source}; the pipeline needs at "
            f"least {spec.validation.min_rows} ([validation].min_rows)."
        )
    skip = {d.target, d.time_column, d.entity_column, d.sensitive, *d.exclude} - {None}
    if d.features:
        features = list(dict.fromkeys([*d.features, *view_cols]))
    else:
        features = [c for c in frame.columns if c not in skip]
    if not features:
        raise ConfigError(
            f"{where}: no feature columns are left; check [data].features and exclude."
        )
    if spec.task == "classification":
        check_class_count(frame[d.target], d.target, where)
    cut = int(len(frame) * (1 - spec.validation.holdout_fraction))
    train, hold = frame.iloc[:cut], frame.iloc[cut:]
    folds = spec.search.cv_folds if spec.search.method != "none" else spec.validation.cv_folds
    if len(hold) < 10 or len(train) < 10 * folds:
        raise MlopsError(
            f"{where}: {len(frame)} rows are too few to split: {len(train)} for training "
            f"({folds} folds) and {len(hold)} for the holdout. Add data or lower "
            "[validation].holdout_fraction / cv_folds."
        )
    if spec.task == "classification":
        for part, y in (("training", train[d.target]), ("holdout", hold[d.target])):
            if y.nunique() < 2:
                raise MlopsError(
                    f"{where}: the target {d.target!r} has a single class "
                    f"({y.iloc[0]!r}) in the {part} slice; a classifier needs two or more."
                )
    from mlops_console.training.search import validate_space

    try:
        validate_space(spec, ws.root)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    inputs = infer_inputs(train[features])
    signature: dict[str, Any] = {"inputs": inputs}
    X_train = prepare_inputs(train[features], signature)
    X_hold = prepare_inputs(hold[features], signature)
    numeric = [c["name"] for c in inputs if c["type"] in ("integer", "float", "boolean")]
    categorical = [c["name"] for c in inputs if c["name"] not in numeric]
    positive, reason = None, ""
    if spec.task == "classification":
        signature["outputs"], signature["labels"] = classification_outputs(
            sorted(train[d.target].unique())
        )
        positive, reason = positive_class(
            train[d.target],
            signature["labels"],
            d.positive_class,
            d.target,
            where,
            _champions_positive(ws, spec),
        )
        if positive is not None:
            signature["positive_class"] = positive
    else:
        signature["outputs"] = [{"name": "predict", "type": "float"}]
    return Prepared(
        spec,
        spec_path,
        frame,
        features,
        numeric,
        categorical,
        X_train,
        train[d.target].to_numpy(),
        X_hold,
        hold[d.target].to_numpy(),
        hold[d.sensitive].to_numpy() if d.sensitive else None,
        signature,
        hold.reset_index(drop=True),
        dv,
        source,
        positive,
        reason,
    )


# A classifier's search scales with its classes; an id or a timestamp chosen as the target
# by mistake has thousands and hangs the search, so it is refused before it starts.
MAX_CLASSES = 100


def check_class_count(y, target: str, where: str) -> None:
    """Refuse a classification target with more classes than its rows can support."""
    n = int(y.nunique())
    limit = max(2, min(MAX_CLASSES, len(y) // 10))  # about ten rows a class at least
    if n > limit:
        raise ConfigError(
            f"{where}: target {target!r} has {n:,} distinct values in {len(y):,} rows; a "
            f"classification target needs few classes (at most {limit} here) — is it the "
            "right column ([data].target), or should task = 'regression'?"
        )


def _champions_positive(ws: Workspace, spec) -> Any:
    """The positive class the model's champion was measured for (None if none is known)."""
    if not spec.register_as:
        return None
    try:
        mv = ws.models.resolve(f"{spec.register_as}@{ws.config.registry.champion_alias}")
    except MlopsError:
        return None
    return (mv.signature or {}).get("positive_class")


def positive_class(
    y, labels: list[Any], given: Any, target: str, where: str, champions: Any = None
) -> tuple[Any, str]:
    """(the class binary metrics describe, how it was chosen); (None, "") unless binary.

    Unset, it is the champion's (so a retrain's metrics compare with the champion's even
    when the classes are near 50/50), else the minority class: a rare event is what a
    binary model is usually for, and sklearn's default (the class sorting last) would
    report a 94% class's f1."""
    if given is not None:
        match = [c for c in labels if c == given or str(c) == str(given)]
        if not match:
            raise ConfigError(
                f"{where}: [data].positive_class {given!r} is not a class of the target "
                f"{target!r} (its classes: {', '.join(repr(c) for c in labels)}); set it to "
                "one of them."
            )
        if len(labels) != 2:
            raise ConfigError(
                f"{where}: [data].positive_class is for a binary target; {target!r} has "
                f"{len(labels)} classes (metrics average over them). Remove it."
            )
        return match[0], "as [data].positive_class says"
    if len(labels) != 2:
        return None, ""
    if champions is not None and champions in labels:
        return champions, "as the champion's; [data].positive_class changes it"
    counts = y.value_counts()
    share = {c: int(counts.get(c, 0)) / len(y) for c in labels}
    rare = min(reversed(labels), key=lambda c: share[c])  # a tie: the class sorting last
    return rare, f"the minority ({share[rare]:.1%} of rows); [data].positive_class changes it"
