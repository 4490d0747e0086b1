"""Building the scikit-learn pipeline a spec describes: preprocessing, then the estimator."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from mlops_console.errors import ConfigError
from mlops_console.pipeline_spec import PipelineSpec

# Estimators that split on raw values: scaling changes nothing for them, and leaving it
# out keeps the ONNX export exact.
TREE_HINTS = ("Tree", "Forest", "Boosting", "XGB", "LGBM", "CatBoost")


def import_object(path: str, root: Path, key: str):
    """`pkg.mod.Name` or `module:function` (a module in the workspace's own code).

    Only `module:function` puts the workspace on sys.path, and only while it imports: a
    `numpy.py` a cloned workspace carries must not shadow a library anywhere else."""
    added = False
    if ":" in path:
        module_name, attr = path.split(":", 1)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
            added = True
    else:
        module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{key} {path!r} cannot be imported ({exc}). Give an import path such as "
            "'sklearn.ensemble.HistGradientBoostingClassifier', or 'module:function' for a "
            "function in a .py file of the workspace."
        ) from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(root))


def build_estimator(spec: PipelineSpec, root: Path):
    obj = import_object(spec.model.estimator, root, "[model].estimator")
    params = dict(spec.model.params)
    try:
        if inspect.isclass(obj):
            if "random_state" in inspect.signature(obj).parameters and "random_state" not in params:
                params["random_state"] = spec.seed
            return obj(**params)
        return obj(**params)  # a builder function
    except TypeError as exc:
        raise ConfigError(f"[model].params do not fit {spec.model.estimator}: {exc}") from None


def needs_scaling(spec: PipelineSpec) -> bool:
    if spec.preprocess.scale != "auto":
        return spec.preprocess.scale == "standard"
    return not any(h in spec.model.estimator for h in TREE_HINTS)


def build_pipeline(spec: PipelineSpec, numeric: list[str], categorical: list[str], root: Path):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    if spec.preprocess.custom:
        make = import_object(spec.preprocess.custom, root, "[preprocess].custom")
        pre = make(numeric=numeric, categorical=categorical)
    else:
        num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if needs_scaling(spec):
            num_steps.append(("scale", StandardScaler()))
        encoder = (
            OneHotEncoder(handle_unknown="ignore")
            if spec.preprocess.categorical == "onehot"
            else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        )
        cat_steps = [
            # prepare_inputs turns missing categories into "" before the model sees them
            (
                "impute",
                SimpleImputer(missing_values="", strategy="constant", fill_value="__missing__"),
            ),
            ("encode", encoder),
        ]
        transformers = []
        if numeric:
            transformers.append(("num", Pipeline(num_steps), numeric))
        if categorical:
            transformers.append(("cat", Pipeline(cat_steps), categorical))
        pre = ColumnTransformer(transformers)
    return Pipeline([("preprocess", pre), ("model", build_estimator(spec, root))])
