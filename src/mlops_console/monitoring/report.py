"""`mlops monitor report`: Markdown + HTML with PNG charts, summaries only.

The report never embeds rows: the HTML links the PNG files next to it, the tables hold
one line per column or per window, so a report stays a few hundred kilobytes whatever
the traffic (Evidently's HTML reports embed the data and grow with it).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_console.formatting import num
from mlops_console.monitoring.reference import PREDICTION, load_reference

if TYPE_CHECKING:
    from mlops_console.monitoring.window import WindowReport

MAX_HISTOGRAMS = 6


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path.name


def _psi_chart(drift: dict[str, Any], psi_limit: float, path: Path) -> str:
    plt = _plt()
    feats = [*drift["features"], drift["prediction"]]
    names = [f["column"] for f in feats]
    values = [f.get("psi") or 0.0 for f in feats]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    colors = ["#c0392b" if f.get("drifted") else "#2e86c1" for f in feats]
    ax.barh(names, values, color=colors)
    ax.axvline(psi_limit, color="#555", linestyle="--", linewidth=1, label=f"PSI {psi_limit}")
    ax.invert_yaxis()
    ax.set_xlabel("PSI (red: drifted)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _histograms(ref, rows, drift: dict[str, Any], path: Path) -> str | None:
    plt = _plt()
    ranked = sorted(
        [*drift["features"], drift["prediction"]], key=lambda f: -(f.get("psi") or 0.0)
    )[:MAX_HISTOGRAMS]
    if not ranked:
        return None
    fig, axes = plt.subplots(
        (len(ranked) + 1) // 2, 2, figsize=(9, 2.6 * ((len(ranked) + 1) // 2)), squeeze=False
    )
    from mlops_console.monitoring.measures import prediction_column

    for ax, f in zip(axes.flat, ranked, strict=False):
        name = PREDICTION if f["column"] == "prediction" else f["column"]
        ref_values = ref.frame[name].to_numpy()
        cur = prediction_column(rows, ref) if name == PREDICTION else rows[f"in.{name}"].to_numpy()
        if f["kind"] == "numeric":
            r = np.asarray(ref_values, dtype=float)
            c = np.asarray(cur, dtype=float)
            r, c = r[np.isfinite(r)], c[np.isfinite(c)]
            both = np.concatenate([r, c]) if len(c) else r
            edges = np.histogram_bin_edges(both, bins=30)
            ax.hist(r, bins=edges, density=True, alpha=0.5, label="reference")
            ax.hist(c, bins=edges, density=True, alpha=0.5, label="current")
        else:
            import pandas as pd

            rs = pd.Series(ref_values).astype(str).value_counts(normalize=True)
            cs = pd.Series(cur).astype(str).value_counts(normalize=True)
            cats = list(rs.index[:12])
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [rs.get(k, 0) for k in cats], 0.4, label="reference")
            ax.bar(x + 0.2, [cs.get(k, 0) for k in cats], 0.4, label="current")
            ax.set_xticks(x, cats, rotation=30, fontsize=7)
        ax.set_title(f"{f['column']} (PSI {f.get('psi') or 0:.3f})", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ranked) :]:
        ax.axis("off")
    return _save(fig, path)


def _over_time(history: list[WindowReport], path: Path) -> str:
    plt = _plt()
    hist = list(reversed(history))
    x = [time.strftime("%m-%d %H:%M", time.localtime(r.end)) for r in hist]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)

    def series(fn):
        out = []
        for r in hist:
            try:
                v = fn(r)
            except (KeyError, TypeError):  # not measured in that window (None, or no key)
                v = None
            out.append(np.nan if v is None else v)
        return out

    axes[0].plot(x, series(lambda r: r.drift["drift_share"]), marker="o", label="drift share")
    axes[0].plot(
        x, series(lambda r: r.drift["prediction"]["psi"]), marker="o", label="prediction PSI"
    )
    axes[0].set_title("Drift", fontsize=9)
    for q in ("p50", "p95", "p99"):
        axes[1].plot(
            x, series(lambda r, q=q: r.performance[f"latency_{q}_ms"]), marker=".", label=q
        )
    axes[1].set_ylabel("ms")
    axes[1].set_title("Latency", fontsize=9)
    axes[2].plot(x, series(lambda r: r.performance["error_rate"]), marker=".", label="error rate")
    axes[2].plot(
        x, series(lambda r: r.stability["nan_output_rate"]), marker=".", label="NaN outputs"
    )
    axes[2].plot(
        x, series(lambda r: r.stability["out_of_range_rate"]), marker=".", label="out of range"
    )
    axes[2].set_title("Errors and stability", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[2].tick_params(axis="x", rotation=45, labelsize=7)
    return _save(fig, path)


def write_report(ws, deployment: str, window: str | None, windows: int, out: str | None):
    from mlops_console.durations import parse_duration

    w = window or ws.config.monitoring.window
    parse_duration(w, "window")
    history = ws.monitor.history(deployment, w, max(windows, 1))
    latest = history[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out else ws.state / "reports" / f"{deployment}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, str]] = []
    drift = latest.drift
    if drift and latest.model is not None and latest.version is not None:
        images.append(
            ("PSI per column", _psi_chart(drift, ws.config.monitoring.psi, folder / "psi.png"))
        )
        mv = ws.models.get_version(latest.model, int(latest.version))
        rows, _, _ = ws.monitor.frames(deployment, latest.start, latest.end)
        rows = rows[(rows["version"] == latest.version) & (rows["role"] != "shadow")]
        hist = _histograms(load_reference(ws, mv), rows, drift, folder / "distributions.png")
        if hist:
            images.append(("Reference and current distributions (largest PSI first)", hist))
    images.append(("Over time", _over_time(history, folder / "over_time.png")))
    md = _markdown(latest, history, images)
    (folder / "report.md").write_text(md)
    (folder / "report.html").write_text(_html(latest, history, images))
    return [folder / "report.md", folder / "report.html", *[folder / i for _, i in images]]


_fmt = num


def _summary(r: WindowReport) -> list[tuple[str, str]]:
    perf, stab = r.performance or {}, r.stability or {}
    drift, decay = r.drift or {}, r.decay or {}
    stale = r.staleness or {}
    return [
        ("Model", f"{r.model} v{r.version} ({r.rows} rows in the window)"),
        (
            "Window",
            f"{r.window} ending {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.end))}",
        ),
        (
            "Requests",
            f"{perf.get('requests', 0)} ({_fmt(perf.get('rps'))} req/s, errors {_fmt(perf.get('error_rate'))})",
        ),
        (
            "Latency p50/p95/p99 ms",
            f"{_fmt(perf.get('latency_p50_ms'))} / {_fmt(perf.get('latency_p95_ms'))} / {_fmt(perf.get('latency_p99_ms'))}",
        ),
        ("Server memory MB", _fmt(perf.get("memory_mb"))),
        (
            "Drifted inputs",
            f"{', '.join(drift.get('drifted_columns', [])) or 'none'} (share {_fmt(drift.get('drift_share'))})",
        ),
        ("Dataset drift", "yes" if drift.get("drifted") else "no"),
        (
            "NaN outputs / out of range / saturated",
            f"{_fmt(stab.get('nan_output_rate'))} / {_fmt(stab.get('out_of_range_rate'))} / {_fmt(stab.get('saturated_rate'))}",
        ),
        ("Collapsed predictions", "yes" if stab.get("collapsed") else "no"),
        ("Labelled rows", _fmt(decay.get("labelled", 0))),
        (
            "Metrics now (at training)",
            ", ".join(
                f"{k} {_fmt(v)} ({_fmt((decay.get('training') or {}).get(k))})"
                for k, v in (decay.get("metrics") or {}).items()
            )
            or "-",
        ),
        (
            "Model / training data age (days)",
            f"{_fmt(stale.get('model_age_days'))} / {_fmt(stale.get('data_age_days'))}",
        ),
    ]


def _columns(r: WindowReport) -> list[list[str]]:
    drift = r.drift or {}
    out = []
    for f in [*drift.get("features", []), *([drift["prediction"]] if drift else [])]:
        num = f["kind"] == "numeric"
        out.append(
            [
                f["column"],
                f["kind"],
                _fmt(f.get("psi")),
                _fmt(f.get("ks") if num else f.get("js")),
                _fmt(f.get("ks_p") if num else f.get("chi2_p")),
                "DRIFT" if f.get("drifted") else "ok",
            ]
        )
    return out


HEAD = ["column", "kind", "PSI", "KS / JS", "p-value", "verdict"]


def _markdown(r: WindowReport, history: list[WindowReport], images) -> str:
    lines = [f"# Monitoring report: {r.deployment}", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in _summary(r)]
    if r.note:
        lines += ["", f"> {r.note}"]
    cols = _columns(r)
    if cols:
        lines += [
            "",
            "## Drift per column",
            "",
            "| " + " | ".join(HEAD) + " |",
            "|" + "---|" * len(HEAD),
        ]
        lines += ["| " + " | ".join(c) + " |" for c in cols]
    for title, img in images:
        lines += ["", f"## {title}", "", f"![{title}]({img})"]
    return "\n".join(lines) + "\n"


def _html(r: WindowReport, history: list[WindowReport], images) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Monitoring report: {e(r.deployment)}</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        ".DRIFT{color:#c0392b;font-weight:bold}</style></head><body>",
        f"<h1>Monitoring report: {e(r.deployment)}</h1><table>",
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary(r)]
    parts.append("</table>")
    if r.note:
        parts.append(f"<p><em>{e(r.note)}</em></p>")
    cols = _columns(r)
    if cols:
        parts.append(
            "<h2>Drift per column</h2><table><tr>"
            + "".join(f"<th>{h}</th>" for h in HEAD)
            + "</tr>"
        )
        parts += [
            "<tr>" + "".join(f"<td class='{e(v)}'>{e(v)}</td>" for v in c) + "</tr>" for c in cols
        ]
        parts.append("</table>")
    for title, img in images:
        parts.append(f"<h2>{e(title)}</h2><img src='{e(img)}' alt='{e(title)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
