"""The Models area: versions, aliases, gates and model cards; promote, roll back, archive,
test a version again, deploy it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlops_console.errors import Conflict
from mlops_console.tui.areas.common import Action, Area, Listing, _num, _when

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _models(ws: Workspace) -> Listing:
    """Every version in two queries (the light columns only: this is the first page of a
    registry with thousands of versions)."""
    with ws.db.read() as conn:
        aliases: dict[tuple[str, int], list[str]] = {}
        for name, alias, version in conn.exec_driver_sql(
            "SELECT model_name, alias, version FROM model_alias ORDER BY alias"
        ):
            aliases.setdefault((name, version), []).append(alias)
        versions = conn.exec_driver_sql(
            "SELECT model_name, version, status, metrics, gates_passed, created_at "
            "FROM model_version ORDER BY model_name, version"
        ).fetchall()
    rows: list[tuple[str, list[str]]] = []
    for name, version, status, metrics, gates, created in versions:
        m = json.loads(metrics or "{}")
        rows.append(
            (
                f"{name}/{version}",
                [
                    f"{name}/{version}",
                    status,
                    ", ".join("@" + a for a in aliases.get((name, version), [])) or "-",
                    "pass" if gates else ("FAIL" if gates is not None and not gates else "-"),
                    _num(m.get("holdout_roc_auc", m.get("holdout_rmse"))),
                    _when(created),
                ],
            )
        )
    return Listing(["version", "status", "aliases", "gates", "metric", "registered"], rows)


def _model_detail(ws: Workspace, key: str) -> str:
    from mlops_console.registry.cards import card_markdown

    return card_markdown(ws.models.card(key))


def _holder(ws: Workspace, name: str) -> tuple[str, int | None]:
    """The champion alias's name and the version of `name` it points to (None: no champion)."""
    alias = ws.config.registry.champion_alias
    with ws.db.read() as conn:
        version = conn.exec_driver_sql(
            "SELECT version FROM model_alias WHERE model_name = ? AND alias = ?", (name, alias)
        ).scalar()
    return alias, version


def _promote(ws: Workspace, key: str) -> str:
    move = ws.models.promote(key, reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version or '-'} -> v{move.to_version}"


def _confirm_promote(ws: Workspace, key: str) -> str:
    mv = ws.models.resolve(key)
    alias, current = _holder(ws, mv.name)
    if current is None:
        return f"Make {mv.name} v{mv.version} {mv.name}@{alias} (it has no {alias} yet)?"
    if current == mv.version:
        return f"{mv.name}@{alias} is v{mv.version} already; promote it again (nothing changes)?"
    return f"Move {mv.name}@{alias} from v{current} to v{mv.version}?"


def _rollback(ws: Workspace, key: str) -> str:
    move = ws.models.rollback(key.split("/")[0], reason="from the console")
    return f"{move.model}@{move.alias}: v{move.from_version} -> v{move.to_version}"


def _confirm_rollback(ws: Workspace, key: str) -> str:
    name = key.split("/")[0]
    alias, current = _holder(ws, name)
    target = ws.models.rollback_target(name, alias)  # none: it says why not
    return f"Move {name}@{alias} back from v{current or '-'} to v{target}?"


def _archive(ws: Workspace, key: str) -> str:
    mv = ws.models.archive(key)
    return f"{mv.ref}: {mv.status}"


def _confirm_archive(ws: Workspace, key: str) -> str:
    mv = ws.models.resolve(key)
    if mv.aliases:  # archiving would be refused: say so before, not after
        raise Conflict(
            f"{mv.ref} is still {', '.join('@' + a for a in mv.aliases)}; promote another "
            "version (p) before archiving it."
        )
    return (
        f"Archive {mv.name} v{mv.version}? It can take no alias (promotion, rollback) "
        f"until `mlops models restore {mv.ref}` makes it ready again."
    )


def _test(ws: Workspace, key: str, progress: Callable[[str], None] = lambda s: None) -> str:
    """The model checks and promotion gates again on the version, as `mlops test` runs them."""
    out = ws.pipelines.retest(key, stage=progress)
    checks = out["checks"]
    failed_checks = [c for c in checks if not c["passed"]]
    gates = out["gates"]
    lines = [
        f"{out['model']}/{out['version']}: gates {'pass' if gates['passed'] else 'FAIL'}; "
        f"checks {len(checks) - len(failed_checks)}/{len(checks)} pass"
    ]
    lines += [f"  gate {g['name']}: {g['detail']}" for g in gates["results"] if not g["passed"]]
    lines += [f"  check {c['name']}: {c['reason'][:100]}" for c in failed_checks]
    return "\n".join(lines)


def _deploy_answer(ws: Workspace, key: str, answer: str) -> tuple[str, str, str]:
    """(model ref, deployment name, target) from `[NAME] [TARGET]`; `-` or nothing: the
    model's name, and the local target."""
    mv = ws.models.resolve(key)
    parts = answer.split()
    if len(parts) > 2:
        raise ValueError(
            f"type a deployment name and a target, e.g. '{mv.name} local' (got {answer!r})"
        )
    name = parts[0] if parts and parts[0] != "-" else mv.name
    target = parts[1] if len(parts) > 1 else "local"
    if not ws.deployments.provides(target):
        from mlops_console.plugins import load_plugins

        known = ", ".join(sorted(load_plugins().deploy_targets())) or "none"
        raise ValueError(f"no deploy target {target!r}; the targets here are: {known}")
    rec = ws.deployments.find(name)
    if rec is not None and rec.running:
        raise Conflict(
            f"Deployment {name!r} exists and serves {rec.model} v{rec.version}; deploy onto it "
            "from the Deployments area (d), or type another deployment name."
        )
    return mv.ref, name, target


def _deploy(ws: Workspace, key: str, answer: str) -> str:
    """Deploy the version as a new deployment (a first deploy; a stopped one starts again)."""
    ref, name, target = _deploy_answer(ws, key, answer)
    rec = ws.deployments.deploy(ref, name=name, target=target)
    return f"{rec.name}: {rec.model} v{rec.version} serving at {rec.endpoint} ({rec.target})"


def _confirm_deploy(ws: Workspace, key: str, answer: str) -> str:
    ref, name, target = _deploy_answer(ws, key, answer)
    again = " (it was stopped)" if ws.deployments.find(name) is not None else ""
    return f"Start deployment {name}{again} serving {ref} on the {target} target?"


AREA = Area(
    "models",
    "Models",
    "Versions, aliases, gates and model cards; test a version again, deploy it.",
    _models,
    _model_detail,
    [
        Action(
            "p",
            "model: promote",
            "Make the selected version champion",
            _promote,
            confirm=_confirm_promote,
        ),
        Action(
            "b",
            "model: rollback",
            "Move champion back to its previous version",
            _rollback,
            confirm=_confirm_rollback,
        ),
        Action(
            "x",
            "model: archive",
            "Archive the selected version",
            _archive,
            confirm=_confirm_archive,
        ),
        Action(
            "t",
            "model: test",
            "Run the model checks and promotion gates again on the selected version",
            _test,
            destructive=False,
            progress=True,
        ),
        Action(
            "d",
            "model: deploy",
            "Deploy the selected version as a new deployment",
            _deploy,
            ask="[DEPLOYMENT] [TARGET]: - for the model's name on local, e.g. churn local",
            confirm=_confirm_deploy,
        ),
    ],
    detail_markdown=True,
)
