"""The model checks: each measures, passes or fails, and says why.

signature, robustness, out_of_time, no_regression, fairness, interpretability,
performance, reproducibility. Results are stored with the model version and shown in
its model card.
"""

from __future__ import annotations

import math
import time
import tracemalloc
import warnings
from dataclasses import dataclass
from typing import Any

from mlops_console.registry.signature import InputError


@dataclass
class CheckContext:
    spec: Any
    prepared: Any
    model: Any  # the fitted scikit-learn pipeline
    bundle: Any  # LoadedBundle: raw frame in, prediction out
    cv_score: float | None
    champion: Any = None  # LoadedBundle of the current champion, if any
    fit_again: Any = None
    model_bytes: int = 0


def result(name: str, passed: bool, reason: str, **measured: Any) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "reason": reason, "measured": measured}


def _finite(values) -> bool:
    import numpy as np

    return bool(np.isfinite(np.asarray(values, dtype=float)).all())


def _positive(ctx: CheckContext):
    """The class the binary metrics describe (None: not a binary classifier)."""
    return getattr(ctx.prepared, "positive_class", None)


def _predict(ctx: CheckContext, frame):
    b = ctx.bundle
    return b.predict_proba(frame) if b.task == "classification" else b.predict(frame)


def check_signature(ctx: CheckContext) -> dict[str, Any]:
    sig = ctx.bundle.signature
    raw = ctx.prepared.hold_frame.head(50)
    names = [c["name"] for c in sig["inputs"]]
    out = _predict(ctx, raw[names])
    problems = []
    if len(out) != len(raw):
        problems.append(f"{len(out)} outputs for {len(raw)} rows")
    if ctx.bundle.task == "classification":
        labels = sig.get("labels") or []
        if out.shape[1] != len(labels):
            problems.append(f"{out.shape[1]} probability columns for {len(labels)} labels")
        pred = set(ctx.bundle.predict(raw[names]).tolist())
        if not pred <= set(labels):
            problems.append(f"predicted labels {sorted(pred - set(labels))} are not declared")
    try:
        _predict(ctx, raw[names[1:]])
        problems.append(f"a frame without {names[0]!r} was accepted")
    except InputError:
        pass
    return result(
        "signature",
        not problems,
        "; ".join(problems)
        or f"accepts its {len(names)} declared inputs, refuses a missing one, returns "
        f"{sig['outputs'][-1]['name']}",
        inputs=len(names),
    )


def check_robustness(ctx: CheckContext) -> dict[str, Any]:
    import numpy as np

    sig = ctx.bundle.signature
    base = ctx.prepared.hold_frame.head(20).reset_index(drop=True)
    names = [c["name"] for c in sig["inputs"]]
    numeric = [c["name"] for c in sig["inputs"] if c["type"] in ("integer", "float")]
    cats = [c["name"] for c in sig["inputs"] if c["type"] == "string"]
    cases: dict[str, Any] = {
        "nan in every numeric column": base.assign(**{c: np.nan for c in numeric}),
        "missing categories": base.assign(**{c: None for c in cats}),
        "an extra column": base.assign(unexpected_column=1),
        "unseen categories": base.assign(**{c: "never-seen-before" for c in cats}),
        "extreme values": base.assign(**{c: 1e12 for c in numeric}),
        "negative extremes": base.assign(**{c: -1e12 for c in numeric}),
        "a missing column": base.drop(columns=names[:1]),
        "wrongly typed values": base.assign(**{c: "abc" for c in numeric[:1]}),
    }
    outcomes, failures = {}, []
    for label, frame in cases.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = _predict(ctx, frame)
            ok = _finite(out)
            outcomes[label] = "finite output" if ok else "NON-FINITE output"
            if not ok:
                failures.append(label)
        except InputError as exc:
            outcomes[label] = f"clear error: {exc}"
        except Exception as exc:  # a crash is exactly what this check looks for
            outcomes[label] = f"CRASH: {type(exc).__name__}: {exc}"
            failures.append(label)
    return result(
        "robustness",
        not failures,
        "every case gives finite output or a clear validation error"
        if not failures
        else "failed on: " + ", ".join(failures),
        cases=outcomes,
    )


def check_out_of_time(ctx: CheckContext, metrics: dict[str, float]) -> dict[str, Any]:
    from mlops_console.metrics import LOWER_IS_BETTER

    m = ctx.spec.validation.primary_metric
    hold, cv = metrics.get(f"holdout_{m}"), ctx.cv_score
    if hold is None or cv is None or math.isnan(hold):
        return result("out_of_time", False, f"no {m} on the holdout to compare")
    drop = (hold - cv) if m in LOWER_IS_BETTER else (cv - hold)
    limit = ctx.spec.checks.max_oot_drop
    return result(
        "out_of_time",
        drop <= limit,
        f"{m} {hold:.4f} on the most recent slice vs {cv:.4f} in cross-validation: drop "
        f"{drop:+.4f} (allowed {limit})",
        holdout=hold,
        cv=cv,
        drop=drop,
        threshold=limit,
    )


def check_no_regression(ctx: CheckContext, metrics: dict[str, float]) -> dict[str, Any]:
    from mlops_console.metrics import better, evaluate

    m = ctx.spec.validation.primary_metric
    new = metrics.get(f"holdout_{m}")
    if ctx.champion is None:
        return result(
            "no_regression",
            True,
            "no other champion to compare with (none yet, or this version is it)",
            new=new,
        )
    try:
        names = [c["name"] for c in ctx.champion.signature["inputs"]]
        raw = ctx.prepared.hold_frame
        from mlops_console.registry.signature import prepare_inputs

        X = prepare_inputs(raw[names], ctx.champion.signature)
        old = evaluate(
            ctx.spec.task, ctx.champion.sklearn_model, X, ctx.prepared.y_hold, _positive(ctx)
        ).get(m)
    except Exception as exc:
        return result(
            "no_regression", False, f"the champion cannot be scored on this holdout: {exc}"
        )
    margin = ctx.spec.checks.regression_margin
    ok = better(m, new, old, margin)
    return result(
        "no_regression",
        ok,
        f"{m} {new:.4f} vs champion v{ctx.champion.manifest.get('version')} "
        f"{old:.4f} on the same holdout (margin {margin})",
        new=new,
        champion=old,
        margin=margin,
    )


def check_fairness(ctx: CheckContext) -> dict[str, Any]:
    import numpy as np

    groups = ctx.prepared.sensitive_hold
    if groups is None:
        return result(
            "fairness", True, "no sensitive attribute declared ([data].sensitive); not measured"
        )
    if ctx.spec.task != "classification" or len(ctx.bundle.signature.get("labels") or []) != 2:
        return result("fairness", True, "measured for binary classifiers only")
    from mlops_console.metrics import positive_column

    col = positive_column(ctx.model.classes_, _positive(ctx))
    pred = (ctx.model.predict_proba(ctx.prepared.X_hold)[:, col] >= 0.5).astype(int)
    y = (np.asarray(ctx.prepared.y_hold) == ctx.model.classes_[col]).astype(int)
    rates, tprs = {}, {}
    for g in sorted({str(v) for v in groups}):
        mask = np.asarray([str(v) == g for v in groups])
        rates[g] = float(pred[mask].mean()) if mask.any() else float("nan")
        pos = mask & (y == 1)
        tprs[g] = float(pred[pos].mean()) if pos.any() else float("nan")
    dpd = max(rates.values()) - min(rates.values())
    eod = np.nanmax(list(tprs.values())) - np.nanmin(list(tprs.values()))
    limit = ctx.spec.checks.fairness_max_gap
    ok = dpd <= limit and eod <= limit
    return result(
        "fairness",
        ok,
        f"{ctx.spec.data.sensitive}: demographic parity difference {dpd:.3f}, "
        f"equal opportunity difference {eod:.3f} (allowed {limit})",
        demographic_parity_difference=dpd,
        equal_opportunity_difference=float(eod),
        positive_rate=rates,
        true_positive_rate=tprs,
        threshold=limit,
    )


def check_interpretability(ctx: CheckContext) -> dict[str, Any]:
    from sklearn.inspection import permutation_importance

    from mlops_console.metrics import scorer

    p = ctx.prepared
    n = min(len(p.X_hold), ctx.spec.checks.importance_rows)
    scoring, _ = scorer(ctx.spec.validation.primary_metric, _positive(ctx))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = permutation_importance(
            ctx.model,
            p.X_hold.iloc[:n],
            p.y_hold[:n],
            scoring=scoring,
            n_repeats=3,
            random_state=ctx.spec.seed,
            n_jobs=1,
        )
    ranked = sorted(
        zip(p.X_hold.columns, imp.importances_mean, imp.importances_std, strict=True),
        key=lambda r: -r[1],
    )
    top = [{"feature": f, "importance": float(m), "std": float(s)} for f, m, s in ranked[:10]]
    return result(
        "interpretability",
        True,
        "top features: " + ", ".join(f"{t['feature']} ({t['importance']:.3f})" for t in top[:5]),
        top_features=top,
        rows=n,
    )


def check_performance(ctx: CheckContext) -> dict[str, Any]:
    import numpy as np

    c = ctx.spec.checks
    raw = ctx.prepared.hold_frame
    one, hundred = raw.head(1), raw.head(100)
    _predict(ctx, one)

    def p99(frame, n):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            _predict(ctx, frame)
            times.append((time.perf_counter() - t) * 1000)
        return float(np.percentile(times, 99))

    lat1, lat100 = p99(one, 100), p99(hundred, 30)
    tracemalloc.start()
    _predict(ctx, raw.head(1000))
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    size = ctx.model_bytes / 1e6
    over = [
        what
        for what, v, lim in (
            ("1-row p99", lat1, c.latency_p99_1row_ms),
            ("100-row p99", lat100, c.latency_p99_100rows_ms),
            ("size", size, c.max_model_mb),
            ("peak memory", peak, c.max_predict_memory_mb),
        )
        if v > lim
    ]
    return result(
        "performance",
        not over,
        f"p99 {lat1:.2f} ms (1 row), {lat100:.2f} ms (100 rows), {size:.2f} MB, peak "
        f"{peak:.1f} MB predicting 1000 rows ({ctx.bundle.runtime} runtime)"
        + (f"; over budget: {', '.join(over)}" if over else ""),
        p99_1row_ms=lat1,
        p99_100rows_ms=lat100,
        model_mb=size,
        peak_memory_mb=peak,
        budgets={
            "p99_1row_ms": c.latency_p99_1row_ms,
            "p99_100rows_ms": c.latency_p99_100rows_ms,
            "model_mb": c.max_model_mb,
            "peak_memory_mb": c.max_predict_memory_mb,
        },
    )


def check_reproducibility(ctx: CheckContext) -> dict[str, Any]:
    import numpy as np

    if ctx.fit_again is None:
        return result("reproducibility", False, "cannot refit: no training data at hand")
    again = ctx.fit_again()
    X = ctx.prepared.X_hold
    a = ctx.model.predict_proba(X) if ctx.spec.task == "classification" else ctx.model.predict(X)
    b = again.predict_proba(X) if ctx.spec.task == "classification" else again.predict(X)
    diff = float(np.abs(np.asarray(a, float) - np.asarray(b, float)).max())
    return result(
        "reproducibility",
        diff <= 1e-9,
        f"refit with seed {ctx.spec.seed}: largest prediction difference {diff:.3g}",
        max_abs_diff=diff,
        seed=ctx.spec.seed,
    )


def _plugin_checks(builtin: list) -> dict[str, Any]:
    """Plugins' checks (the `mlops_model_checks` hook); a built-in's name stays built-in."""
    from mlops_console.plugins import load_plugins

    taken = {name for name, _ in builtin}
    return {k: v for k, v in load_plugins().model_checks().items() if k not in taken}


def _plugin_check(name: str, fn, ctx: CheckContext):
    def run() -> dict[str, Any]:
        r = fn(ctx)
        if not isinstance(r, dict) or not isinstance(r.get("passed"), bool):
            raise TypeError(f"returned {r!r}, not result(name, passed, reason, ...)")
        return result(name, r["passed"], str(r.get("reason", "")), **(r.get("measured") or {}))

    return run


def run_checks(
    ctx: CheckContext, stage=lambda s: None, metrics: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    from mlops_console.metrics import evaluate

    if metrics is None:
        metrics = {
            f"holdout_{k}": v
            for k, v in evaluate(
                ctx.spec.task, ctx.model, ctx.prepared.X_hold, ctx.prepared.y_hold, _positive(ctx)
            ).items()
        }
    from mlops_console.pipeline_spec import CHECK_NAMES  # the spec's names, in run order

    run_one = {
        "signature": lambda: check_signature(ctx),
        "robustness": lambda: check_robustness(ctx),
        "out_of_time": lambda: check_out_of_time(ctx, metrics),
        "no_regression": lambda: check_no_regression(ctx, metrics),
        "fairness": lambda: check_fairness(ctx),
        "interpretability": lambda: check_interpretability(ctx),
        "performance": lambda: check_performance(ctx),
        "reproducibility": lambda: check_reproducibility(ctx),
    }
    runs = [(name, run_one[name]) for name in CHECK_NAMES]
    runs += [(name, _plugin_check(name, fn, ctx)) for name, fn in _plugin_checks(runs).items()]
    out = []
    for name, fn in runs:
        try:
            r = fn()
        except Exception as exc:  # a check that cannot run fails, with the reason
            r = result(name, False, f"the check could not run: {type(exc).__name__}: {exc}")
        stage(f"  check {name}: {'pass' if r['passed'] else 'FAIL'} - {r['reason'][:90]}")
        out.append(r)
    return out
