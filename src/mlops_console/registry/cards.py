"""Model cards: what a version is, what it was trained on, how it did, what it is for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_console.formatting import when

if TYPE_CHECKING:
    from mlops_console.registry.models import ModelRegistry, ModelVersion


def _when(ts: float | None) -> str:
    return when(ts, utc=True)


def model_card(registry: ModelRegistry, mv: ModelVersion) -> dict[str, Any]:
    lineage = mv.lineage or {}
    run = lineage.get("run") or {}
    history = [
        m.to_dict()
        for m in registry.history(mv.name)
        if mv.version in (m.from_version, m.to_version)
    ]
    return {
        "model": mv.name,
        "version": mv.version,
        "status": mv.status,
        "aliases": mv.aliases,
        "created_at": mv.created_at,
        "created_by": mv.created_by,
        "description": mv.description,
        "intended_use": mv.intended_use
        or "Not stated. Say what this model is for and what "
        "it must not be used for when registering it (intended_use=...).",
        "training": {
            "run_id": mv.run_id,
            "experiment": run.get("experiment"),
            "params": run.get("params", {}),
            "seed": lineage.get("seed"),
            "code": lineage.get("git"),
            "spec": lineage.get("spec"),
            "environment": lineage.get("environment"),
        },
        "data": lineage.get("datasets", []),
        "signature": mv.signature,
        "metrics": mv.metrics,
        "checks": mv.checks,
        "gates": mv.gates,
        "gates_passed": mv.gates_passed,
        "top_features": next(
            (
                c["measured"].get("top_features", [])
                for c in mv.checks
                if c.get("name") == "interpretability"
            ),
            [],
        ),
        "artifact": {"sha256": mv.artifact_hash},
        "alias_history": history,
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card['model']} version {card['version']}", ""]
    aliases = ", ".join("@" + a for a in card["aliases"]) or "none"
    lines += [
        f"- Status: {card['status']}; aliases: {aliases}",
        f"- Registered: {_when(card['created_at'])} by {card['created_by'] or 'unknown'}",
        f"- Artifact sha256: `{card['artifact']['sha256']}`",
        "",
    ]
    if card["description"]:
        lines += [card["description"], ""]
    lines += ["## Intended use", "", card["intended_use"], ""]
    tr = card["training"]
    lines += ["## Training", ""]
    lines.append(
        f"- Run: `{tr['run_id'] or '-'}` (experiment {tr['experiment'] or '-'}), seed {tr['seed']}"
    )
    code = tr.get("code")
    if code:
        dirty = (
            " (uncommitted changes, diff sha256 " + (code.get("diff_sha256") or "")[:12] + ")"
            if code.get("dirty")
            else ""
        )
        lines.append(f"- Code: git {(code.get('commit') or 'no commit')[:12]}{dirty}")
    else:
        lines.append("- Code: not under git")
    if tr.get("spec"):
        lines.append(
            f"- Pipeline spec: {tr['spec']['path']} (sha256 {(tr['spec']['sha256'] or '')[:12]})"
        )
    env = tr.get("environment") or {}
    if env:
        pk = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        lines.append(f"- Environment: Python {env.get('python')} on {env.get('platform')}; {pk}")
    if tr["params"]:
        lines += ["", "| param | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(tr["params"].items())]
    lines += ["", "## Data", ""]
    if card["data"]:
        lines += ["| dataset | version | rows | digest |", "|---|---|---|---|"]
        lines += [
            f"| {d['name']} | {d['version']} | {d['rows'] if d['rows'] is not None else '-'} | `{d['digest'][:12]}` |"
            for d in card["data"]
        ]
    else:
        lines.append("No dataset recorded.")
    lines += ["", "## Metrics", ""]
    if card["metrics"]:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(card["metrics"].items())]
    else:
        lines.append("No metrics recorded.")
    lines += ["", "## Checks", ""]
    if card["checks"]:
        lines += ["| check | result | measured |", "|---|---|---|"]
        lines += [
            f"| {c.get('name')} | {'pass' if c.get('passed') else 'FAIL'} | {c.get('reason', '')} |"
            for c in card["checks"]
        ]
    else:
        lines.append("No model checks have run on this version yet.")
    if card.get("top_features"):
        lines += [
            "",
            "## Most important features (permutation importance on the holdout)",
            "",
            "| feature | importance |",
            "|---|---|",
        ]
        lines += [
            f"| {t['feature']} | {t['importance']:.4f} ± {t['std']:.4f} |"
            for t in card["top_features"]
        ]
    gates = card.get("gates") or {}
    if gates.get("results"):
        verdict = "all pass" if card.get("gates_passed") else "FAILED"
        lines += [
            "",
            f"## Promotion gates: {verdict}",
            "",
            "| gate | result | detail |",
            "|---|---|---|",
        ]
        lines += [
            f"| {g['name']} | {'pass' if g['passed'] else 'FAIL'} | {g['detail']} |"
            for g in gates["results"]
        ]
    sig = card["signature"] or {}
    lines += ["", "## Signature", ""]
    if sig.get("inputs"):
        lines += ["| input | type | details |", "|---|---|---|"]
        for col in sig["inputs"]:
            details = col.get("categories") or col.get("range") or ""
            lines.append(f"| {col['name']} | {col['type']} | {details} |")
        if sig.get("outputs"):
            lines += [
                "",
                "Outputs: " + ", ".join(f"{o['name']} ({o['type']})" for o in sig["outputs"]),
            ]
    else:
        lines.append("No signature recorded.")
    if card["alias_history"]:
        lines += [
            "",
            "## Alias history",
            "",
            "| when | alias | move | by | reason |",
            "|---|---|---|---|---|",
        ]
        for m in card["alias_history"]:
            lines.append(
                f"| {_when(m['at'])} | {m['alias']} | {m['from_version'] or '-'} → "
                f"{m['to_version'] or '-'} ({m['kind']}) | {m['actor']} | {m['reason']} |"
            )
    return "\n".join(lines) + "\n"
