"""Hyperparameter search: grid, random or successive halving, with time-aware CV.

Every candidate's score is tracked on the run (metric `search_score`, one step per
candidate) and in the `search.json` artifact.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
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


class ComputeUnavailable(Exception):
    """A compute backend cannot be used now (unreachable, too small); the search runs
    locally and the run says why. Raise an MlopsError instead to refuse the run."""


@dataclass
class Compute:
    """Where a run's search goes: `session` is a plugin's backend (None: this process).

    A backend (what a `mlops_compute_backends` factory returns for the [compute] settings)
    has `open()` (connect and check, raising ComputeUnavailable or an MlopsError),
    `parallel(X, y)` (a context in which joblib's Parallel runs on it, with X and y sent
    to the workers once), `poll()` (new lines to show, e.g. a worker lost), `describe()`
    (what the run's lineage records) and `close()`."""

    backend: str = "local"
    session: Any = None
    fallback: str | None = None
    events: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend if self.session else "local"}
        if self.session is not None:
            out.update(self.session.describe())
            out["events"] = list(self.events)
        if self.fallback:
            out["requested"], out["fallback"] = self.backend, self.fallback
        return out

    def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):  # the run's outcome does not depend on it
                self.session.close()


def open_compute(
    ws, spec, backend: str | None = None, scheduler: str | None = None, stage=lambda s: None
) -> Compute:
    """The [compute] backend for this run (`backend`/`scheduler` override mlops.toml),
    connected and checked before the search; local, with one line why, when it cannot be
    used. A version skew between here and the workers is refused (an MlopsError)."""
    settings = ws.config.compute.model_dump()
    if backend:
        settings["backend"] = backend
    if scheduler:
        settings["scheduler"] = scheduler
    name = settings["backend"]
    if name == "local":
        return Compute()
    from mlops_console.plugins import load_plugins

    factories = load_plugins().compute_backends()
    if name not in factories:
        known = ", ".join(sorted(["local", *factories]))
        raise ConfigError(
            f"No installed plugin provides the compute backend {name!r} (known: {known}); "
            'install its plugin (e.g. pip install -e plugins/mlops-dask) or use backend = "local".'
        )
    if ":" in spec.model.estimator or spec.preprocess.custom:
        why = "the pipeline uses workspace code (module:function), which the workers cannot import"
        stage(f"  compute: the search runs locally, not on {name}: {why}")
        return Compute(name, None, why)
    try:
        session = factories[name](settings)
        session.open()
    except ComputeUnavailable as exc:
        stage(f"  compute: the search runs locally, not on {name}: {exc}")
        return Compute(name, None, str(exc))
    info = session.describe()
    stage(
        f"  compute: {name} at {info.get('scheduler', '?')}, "
        f"{info.get('workers', '?')} worker(s), {info.get('threads', '?')} thread(s)"
    )
    return Compute(name, session)


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


def search_rows(spec, X, y):
    """The rows the search scores on: all, or `[search].max_rows` of them, the most recent
    when the data has a time column (the rows are sorted by time), else a seeded sample."""
    cap = spec.search.max_rows
    if cap is None or len(X) <= cap:
        return X, y
    import numpy as np

    if spec.data.time_column:
        idx = np.arange(len(X) - cap, len(X))
    else:
        idx = np.sort(np.random.default_rng(spec.seed).choice(len(X), cap, replace=False))
    rows = X.iloc[idx] if hasattr(X, "iloc") else X[idx]
    return rows, (y.iloc[idx] if hasattr(y, "iloc") else np.asarray(y)[idx])


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


def search(ws, p, run, stage, compute: Compute | None = None) -> SearchResult:
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
    X, y = search_rows(spec, p.X_train, p.y_train)
    if len(X) < len(p.X_train):
        stage(f"  the search scores candidates on {len(X)} of {len(p.X_train)} training rows")
    cv = cv_splitter(spec, y)
    method = spec.search.method
    compute = compute or Compute()
    remote = compute.session is not None
    where = compute.session.parallel(X, y) if remote else contextlib.nullcontext()
    if method == "halving":
        with where:
            return _halving(base, space, spec, X, y, cv, scoring, sign, run, stage, make)
    if method == "grid":
        candidates = list(ParameterGrid(space))
    elif method == "random":
        dists = {k: _distribution(k, v) for k, v in space.items()}
        candidates = list(
            ParameterSampler(dists, n_iter=spec.search.candidates, random_state=spec.seed)
        )
    else:
        candidates = [{}]

    def score(i: int, params: dict[str, Any], X, y):  # X, y as arguments: sent once
        from joblib import parallel_config

        # On a cluster, a candidate's own joblib calls (a forest's trees) stay in its
        # worker: joblib would hand them back to the cluster as tasks whose data only that
        # worker holds, so losing the worker would fail the search instead of re-running it.
        inner = parallel_config(backend="sequential") if remote else contextlib.nullcontext()
        with warnings.catch_warnings(), inner:
            warnings.simplefilter("ignore")
            s = cross_val_score(make(params), X, y, cv=cv, scoring=scoring, n_jobs=1)
        return i, params, float(sign * s.mean()), float(s.std())

    n = len(candidates)
    n_jobs = -1 if remote else (1 if n == 1 else spec.search.n_jobs)
    table = []

    def run_candidates(todo: list[int]) -> None:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1)(
            delayed(score)(i, candidates[i], X, y) for i in todo
        )
        for i, params, mean, std in results:
            table.append({"candidate": i, "params": _plain(params), "score": mean, "std": std})
            run.log_metric("search_score", mean, step=i)
            if n > 1:
                stage(
                    f"  candidate {len(table)}/{n}: cv {spec.validation.primary_metric} "
                    f"{mean:.4f}  {_short(params)}"
                )
            if remote:
                for line in compute.session.poll():
                    compute.events.append(line)
                    stage(f"  compute: {line}")

    todo = list(range(n))
    for attempt in range(3 if remote else 1):
        try:
            with where if attempt == 0 else compute.session.parallel(X, y):
                run_candidates(todo)
            break
        except Exception as exc:
            # a lost worker can take the only copy of the scattered data with it, and Dask
            # cancels what needed it: the candidates not scored yet run again, scattered anew
            lost = remote and type(exc).__name__ in ("CancelledError", "FutureCancelledError")
            if not lost or attempt == 2:
                raise
            scored = {r["candidate"] for r in table}
            todo = [i for i in range(n) if i not in scored]
            line = (
                f"the cluster lost data a candidate needed ({type(exc).__name__}); "
                f"{len(todo)} candidate(s) run again"
            )
            compute.events.append(line)
            stage(f"  compute: {line}")
    table.sort(key=lambda r: r["candidate"])
    from mlops_console.metrics import LOWER_IS_BETTER

    pick = min if spec.validation.primary_metric in LOWER_IS_BETTER else max
    best = pick(table, key=lambda r: r["score"])
    return SearchResult(candidates[best["candidate"]], best["score"], best["std"], table, make)


def _halving(base, space, spec, X, y, cv, scoring, sign, run, stage, make) -> SearchResult:
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
        ).fit(X, y)
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
