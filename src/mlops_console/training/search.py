"""Hyperparameter search: grid, random or successive halving, with time-aware CV.

Every candidate's score is tracked on the run (metric `search_score`, one step per
candidate) and in the `search.json` artifact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from mlops_console.errors import ConfigError


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_score: float
    best_std: float
    table: list[dict[str, Any]]
    _make: Any

    def fit_best(self, X, y):
        model = self._make(self.best_params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.fit(X, y)


def _key(name: str) -> str:
    return name if "__" in name else f"model__{name}"


def _distribution(name: str, value: Any):
    from scipy import stats

    if isinstance(value, list):
        if not value:
            raise ConfigError(f"[search.space].{name} is an empty list of choices.")
        return value
    if isinstance(value, dict) and {"low", "high"} <= set(value):
        low, high = value["low"], value["high"]
        if value.get("int"):
            return stats.randint(int(low), int(high) + 1)
        if value.get("log"):
            return stats.loguniform(low, high)
        return stats.uniform(low, high - low)
    raise ConfigError(
        f"[search.space].{name} must be a list of choices or a table "
        "{ low = ..., high = ..., log = true|false, int = true|false }."
    )


def cv_splitter(spec, y):
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    folds = spec.search.cv_folds if spec.search.method != "none" else spec.validation.cv_folds
    if spec.data.time_column:
        return TimeSeriesSplit(n_splits=folds)  # the rows are sorted by time
    if spec.task == "classification":
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=spec.seed)
    return KFold(n_splits=folds, shuffle=True, random_state=spec.seed)


def validate_space(spec, root) -> None:
    """Every searched parameter exists and every range is well formed (before training)."""
    from mlops_console.training.build import build_pipeline

    valid = set(build_pipeline(spec, ["_n"], ["_c"], root).get_params())
    space = {_key(k): v for k, v in spec.search.space.items()}
    unknown = [k for k in space if k not in valid]
    if unknown:
        raise ConfigError(
            f"[search.space] has parameter(s) {', '.join(k.removeprefix('model__') for k in unknown)} "
            "that the pipeline does not take; model parameters are e.g. "
            f"{', '.join(sorted(k.removeprefix('model__') for k in valid if k.startswith('model__'))[:6])}."
        )
    if spec.search.method in ("random", "halving"):
        for k, v in spec.search.space.items():
            _distribution(k, v)


def search(ws, p, run, stage) -> SearchResult:
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid, ParameterSampler, cross_val_score

    from mlops_console.metrics import scorer
    from mlops_console.training.build import build_pipeline

    spec = p.spec
    base = build_pipeline(spec, p.numeric, p.categorical, ws.root)
    valid = set(base.get_params())
    space = {_key(k): v for k, v in spec.search.space.items()}
    unknown = [k for k in space if k not in valid]
    if unknown:
        raise ConfigError(
            f"[search.space] has parameter(s) {', '.join(unknown)} that the pipeline does "
            f"not take; model parameters are e.g. {', '.join(sorted(k for k in valid if k.startswith('model__'))[:6])}."
        )

    def make(params: dict[str, Any]):
        return clone(base).set_params(**params)

    scoring, sign = scorer(spec.validation.primary_metric, p.positive_class)
    cv = cv_splitter(spec, p.y_train)
    method = spec.search.method
    if method == "halving":
        return _halving(base, space, spec, p, cv, scoring, sign, run, stage, make)
    if method == "grid":
        candidates = list(ParameterGrid(space))
    elif method == "random":
        dists = {k: _distribution(k, v) for k, v in space.items()}
        candidates = list(
            ParameterSampler(dists, n_iter=spec.search.candidates, random_state=spec.seed)
        )
    else:
        candidates = [{}]

    def score(i: int, params: dict[str, Any]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = cross_val_score(
                make(params), p.X_train, p.y_train, cv=cv, scoring=scoring, n_jobs=1
            )
        return i, params, float(sign * s.mean()), float(s.std())

    n = len(candidates)
    n_jobs = 1 if n == 1 else spec.search.n_jobs
    table = []
    for done, (i, params, mean, std) in enumerate(
        Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(score)(i, c) for i, c in enumerate(candidates)
        ),
        1,
    ):
        table.append({"candidate": i, "params": _plain(params), "score": mean, "std": std})
        run.log_metric("search_score", mean, step=i)
        if n > 1:
            stage(
                f"  candidate {done}/{n}: cv {spec.validation.primary_metric} {mean:.4f}  {_short(params)}"
            )
    table.sort(key=lambda r: r["candidate"])
    from mlops_console.metrics import LOWER_IS_BETTER

    pick = min if spec.validation.primary_metric in LOWER_IS_BETTER else max
    best = pick(table, key=lambda r: r["score"])
    return SearchResult(candidates[best["candidate"]], best["score"], best["std"], table, make)


def _halving(base, space, spec, p, cv, scoring, sign, run, stage, make) -> SearchResult:
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    dists = {k: _distribution(k, v) for k, v in space.items()}
    stage(f"successive halving over {spec.search.candidates} candidates")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hs = HalvingRandomSearchCV(
            base,
            dists,
            n_candidates=spec.search.candidates,
            cv=cv,
            scoring=scoring,
            random_state=spec.seed,
            n_jobs=spec.search.n_jobs,
            refit=False,
        ).fit(p.X_train, p.y_train)
    res = hs.cv_results_
    table = []
    for i in range(len(res["params"])):
        table.append(
            {
                "candidate": i,
                "iteration": int(res["iter"][i]),
                "resources": int(res["n_resources"][i]),
                "params": _plain(res["params"][i]),
                "score": float(sign * res["mean_test_score"][i]),
                "std": float(res["std_test_score"][i]),
            }
        )
        run.log_metric("search_score", float(sign * res["mean_test_score"][i]), step=i)
    stage(f"  halving: {len(table)} evaluations over {int(max(res['iter'])) + 1} rounds")
    best = hs.best_index_
    return SearchResult(
        res["params"][best],
        float(sign * res["mean_test_score"][best]),
        float(res["std_test_score"][best]),
        table,
        make,
    )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        out[k.removeprefix("model__")] = v.item() if hasattr(v, "item") else v
    return out


def _short(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k.removeprefix('model__')}={v:.4g}"
        if isinstance(v, float)
        else f"{k.removeprefix('model__')}={v}"
        for k, v in params.items()
    )
