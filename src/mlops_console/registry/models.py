"""`ws.models`: register versions, move aliases (with an append-only history), roll back.

One service, ~500 lines, on purpose: registering a version, moving an alias and changing
a version's status each check the others' state (status, gates, the alias history) in
the same write transaction, so they share the private queries here. The records and
references are in registry/records.py.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.errors import Conflict, MlopsError, NotFound
from mlops_console.names import check_name
from mlops_console.registry.gate_rules import check_gate_rules
from mlops_console.registry.records import (
    _VERSION_COLS,
    AliasMove,
    ModelVersion,
    RegisteredModel,
    _version_from_row,
    parse_ref,
)
from mlops_console.users import current_user

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


def _run_snapshot(conn, run_id: str) -> tuple[dict[str, Any], dict[str, float]]:
    """A run's lineage, params, inputs and latest metrics, copied into a version so
    they outlive the run."""
    row = conn.exec_driver_sql(
        "SELECT r.lineage, e.name, r.name FROM run r JOIN experiment e ON e.id = r.experiment_id "
        "WHERE r.id = ?",
        (run_id,),
    ).first()
    if row is None:
        raise NotFound(f"No run {run_id!r} in this workspace.")
    lineage = json.loads(row[0])
    params = dict(
        conn.exec_driver_sql("SELECT key, value FROM param WHERE run_id = ?", (run_id,)).all()
    )
    lineage["run"] = {"id": run_id, "experiment": row[1], "name": row[2], "params": params}
    lineage["datasets"] = [
        {"name": n, "version": v, "digest": d, "rows": r, "source": s, "forced": bool(f)}
        for n, v, d, r, s, f in conn.exec_driver_sql(
            "SELECT name, version, digest, rows, source, forced FROM run_input WHERE run_id = ? ORDER BY name",
            (run_id,),
        )
    ]
    metrics = {
        k: (float("nan") if v is None else v)
        for k, v in conn.exec_driver_sql(
            "SELECT key, value FROM latest_metric WHERE run_id = ?", (run_id,)
        )
    }
    return lineage, metrics


class ModelRegistry:
    def __init__(self, ws: Workspace):
        self.ws = ws

    # --- register ----------------------------------------------------------------------

    def register(
        self,
        name: str,
        run: Any = None,
        artifact: str | bytes | Path | None = None,
        signature: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        description: str = "",
        intended_use: str = "",
        actor: str | None = None,
        bundle: Any = None,
        checks: list[dict[str, Any]] | None = None,
        gates: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Create the next version of `name` from a run's artifact.

        `artifact` is an artifact hash, a path, bytes, or None for the run's artifact
        named "model" (or its only artifact). Metrics default to the run's latest metrics.
        `checks` and `gates` (a pipeline's evaluation) are written in the same transaction,
        so no version exists, even after a crash, whose gates were never recorded.
        """
        check_name("model", name)
        run_id = None if run is None else (run if isinstance(run, str) else run.id)
        if run_id is not None:
            if hasattr(run, "flush"):
                run.flush()
            if not re.fullmatch(r"[0-9a-f]{32}", run_id):
                run_id = self.ws.runs.resolve_id(run_id)
        bundle_hashes: dict[str, str] = {}
        if bundle is not None:
            bundle_hashes = {n: self.ws.artifacts.put_bytes(b) for n, b in bundle.files.items()}
            digest = ""
        else:
            digest = self._artifact_digest(run_id, artifact)
        actor = actor or current_user()
        lineage: dict[str, Any] = {}
        gates_passed = None if gates is None else bool(gates.get("passed"))
        with self.ws.db.write() as conn:
            now = time.time()
            if run_id:
                lineage, run_metrics = _run_snapshot(conn, run_id)
                if metrics is None:
                    metrics = run_metrics
            conn.exec_driver_sql(
                "INSERT INTO registered_model (name, description, created_at, updated_at) "
                "VALUES (?, '', ?, ?) ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at",
                (name, now, now),
            )
            version = conn.exec_driver_sql(
                "SELECT coalesce(max(version), 0) + 1 FROM model_version WHERE model_name = ?",
                (name,),
            ).scalar()
            if bundle is not None:
                # bundle.json names its version, so it is written once the version is known
                digest = self.ws.artifacts.put_bytes(bundle.manifest(name, version, bundle_hashes))
                conn.exec_driver_sql(
                    "INSERT OR IGNORE INTO object_ref (hash, kind, owner) VALUES (?, 'model_version', ?)",
                    [(h, f"{name}/{version}") for h in bundle_hashes.values()],
                )
            conn.exec_driver_sql(
                f"INSERT INTO model_version ({_VERSION_COLS}) "
                "VALUES (?, ?, ?, ?, 'ready', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    run_id,
                    digest,
                    json.dumps(signature or {}),
                    json.dumps(metrics or {}),
                    json.dumps(lineage),
                    json.dumps(checks or []),
                    description,
                    intended_use,
                    now,
                    actor,
                    json.dumps(gates or {}),
                    gates_passed,
                ),
            )
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO object_ref (hash, kind, owner) VALUES (?, 'model_version', ?)",
                (digest, f"{name}/{version}"),
            )
        return ModelVersion(
            name=name,
            version=version,
            run_id=run_id,
            artifact_hash=digest,
            status="ready",
            signature=signature or {},
            metrics=metrics or {},
            lineage=lineage,
            checks=checks or [],
            description=description,
            intended_use=intended_use,
            created_at=now,
            created_by=actor,
            gates=gates or {},
            gates_passed=gates_passed,
        )

    def _artifact_digest(self, run_id: str | None, artifact: str | bytes | Path | None) -> str:
        store = self.ws.artifacts
        if isinstance(artifact, bytes | bytearray):
            return store.put_bytes(bytes(artifact))
        if isinstance(artifact, Path) or (
            isinstance(artifact, str) and not re.fullmatch(r"[0-9a-f]{64}", artifact)
        ):
            path = Path(artifact)
            if not path.is_file():
                raise NotFound(f"Cannot register {path}: no such file.")
            return store.put_file(path)
        if isinstance(artifact, str):
            if not store.exists(artifact):
                raise NotFound(f"Artifact {artifact[:12]} is not in this workspace's store.")
            return artifact
        if run_id is None:
            raise MlopsError("register() needs a run or an artifact to register.")
        with self.ws.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, hash FROM run_artifact WHERE run_id = ? ORDER BY name", (run_id,)
            ).all()
        by_name = dict(rows)
        if "model" in by_name:
            return by_name["model"]
        if len(rows) == 1:
            return rows[0][1]
        raise MlopsError(
            f"Run {run_id[:8]} has {len(rows)} artifacts and none named 'model'; pass "
            "artifact= to say which one to register."
        )

    # --- read ------------------------------------------------------------------------------

    def _aliases(self, conn, name: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for alias, version in conn.exec_driver_sql(
            "SELECT alias, version FROM model_alias WHERE model_name = ? ORDER BY alias", (name,)
        ):
            out.setdefault(version, []).append(alias)
        return out

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self.ws.db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT {_VERSION_COLS} FROM model_version WHERE model_name = ? AND version = ?",
                (name, version),
            ).first()
            if row is None:
                self._require_model(conn, name)
                raise NotFound(
                    f"Model {name!r} has no version {version}. `mlops models show {name}` lists its versions."
                )
            return _version_from_row(row, self._aliases(conn, name).get(version, []))

    def resolve(self, ref: str) -> ModelVersion:
        """`name`, `name/3` or `name@alias` to a version (name alone: the latest ready one)."""
        name, alias, version = parse_ref(ref)
        if version is not None:
            return self.get_version(name, version)
        with self.ws.db.read() as conn:
            if alias is not None:
                found = conn.exec_driver_sql(
                    "SELECT version FROM model_alias WHERE model_name = ? AND alias = ?",
                    (name, alias),
                ).scalar()
                if found is None:
                    self._require_model(conn, name)
                    raise NotFound(
                        f"Model {name!r} has no alias {alias!r}. Set it with "
                        f"`mlops models promote {name}/VERSION --alias {alias}`."
                    )
            else:
                found = conn.exec_driver_sql(
                    "SELECT max(version) FROM model_version WHERE model_name = ? AND status = 'ready'",
                    (name,),
                ).scalar()
                if found is None:
                    self._require_model(conn, name)
                    raise NotFound(f"Model {name!r} has no ready version.")
        return self.get_version(name, found)

    def _require_model(self, conn, name: str) -> None:
        if not conn.exec_driver_sql(
            "SELECT 1 FROM registered_model WHERE name = ?", (name,)
        ).first():
            raise NotFound(f"No model named {name!r}. `mlops models list` shows the models.")

    def list(self) -> list[RegisteredModel]:
        with self.ws.db.read() as conn:
            models = []
            for name, desc, created, updated, n, latest in conn.exec_driver_sql(
                "SELECT m.name, m.description, m.created_at, m.updated_at, count(v.id), "
                "max(v.version) FROM registered_model m LEFT JOIN model_version v "
                "ON v.model_name = m.name GROUP BY m.name ORDER BY m.name"
            ):
                aliases = {
                    a: v
                    for a, v in conn.exec_driver_sql(
                        "SELECT alias, version FROM model_alias WHERE model_name = ? ORDER BY alias",
                        (name,),
                    )
                }
                models.append(RegisteredModel(name, desc, n, latest, aliases, created, updated))
            return models

    def versions(self, name: str) -> builtins.list[ModelVersion]:
        with self.ws.db.read() as conn:
            self._require_model(conn, name)
            aliases = self._aliases(conn, name)
            return [
                _version_from_row(row, aliases.get(row[1], []))
                for row in conn.exec_driver_sql(
                    f"SELECT {_VERSION_COLS} FROM model_version WHERE model_name = ? "
                    "ORDER BY version",
                    (name,),
                )
            ]

    def load(self, ref: str) -> Any:
        """Unpickle a version's model, after verifying its artifact's hash (for a bundle:
        its scikit-learn pipeline)."""
        from mlops_console.registry.bundle import is_manifest, load_bundle

        mv = self.resolve(ref)
        data = self.ws.artifacts.get_bytes(mv.artifact_hash)
        if is_manifest(data):
            return load_bundle(self.ws.artifacts, mv.artifact_hash, runtime="sklearn").sklearn_model
        return self.ws.artifacts.load_pickle(mv.artifact_hash)

    def bundle(self, ref: str, runtime: str | None = None):
        """A version's bundle, ready to predict from raw frames (ONNX when it has one)."""
        from mlops_console.registry.bundle import is_manifest, load_bundle

        mv = self.resolve(ref)
        if not is_manifest(self.ws.artifacts.get_bytes(mv.artifact_hash)):
            raise MlopsError(f"{mv.ref} was registered without a bundle (a bare artifact).")
        return load_bundle(self.ws.artifacts, mv.artifact_hash, runtime=runtime)

    # --- aliases -----------------------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        reason: str = "",
        actor: str | None = None,
        kind: str = "set",
    ) -> AliasMove:
        """Point `alias` at `version`, recording the move in the history."""
        check_name("alias", alias)
        actor = actor or current_user()
        with self.ws.db.write() as conn:
            # the time is taken holding the write lock, so the history's times follow the
            # order the moves were made in, even with several processes promoting at once
            now = time.time()
            status = conn.exec_driver_sql(
                "SELECT status FROM model_version WHERE model_name = ? AND version = ?",
                (name, version),
            ).scalar()
            if status is None:
                self._require_model(conn, name)
                raise NotFound(f"Model {name!r} has no version {version}.")
            previous = conn.exec_driver_sql(
                "SELECT version FROM model_alias WHERE model_name = ? AND alias = ?",
                (name, alias),
            ).scalar()
            if previous == version:  # not a move: nothing to record, nothing to undo
                return AliasMove(name, alias, "unchanged", previous, version, now, actor, reason)
            if kind != "rollback":
                check_gate_rules(conn, self.ws.config.registry, name, alias, version)
            if status != "ready":
                raise Conflict(
                    f"{name}/{version} is {status}; only ready versions can take an alias. "
                    f"Restore it with `mlops models restore {name}/{version}` first."
                )
            conn.exec_driver_sql(
                "INSERT INTO model_alias (model_name, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT(model_name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, version),
            )
            conn.exec_driver_sql(
                "INSERT INTO alias_event (model_name, alias, kind, from_version, to_version, at, "
                "actor, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, alias, kind, previous, version, now, actor, reason),
            )
        return AliasMove(name, alias, kind, previous, version, now, actor, reason)

    def record_evaluation(
        self, name: str, version: int, checks: builtins.list[dict[str, Any]], gates: dict[str, Any]
    ) -> None:
        """Store a version's model check results and gate outcome."""
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE model_version SET checks = ?, gates = ?, gates_passed = ? "
                "WHERE model_name = ? AND version = ?",
                (json.dumps(checks), json.dumps(gates), bool(gates.get("passed")), name, version),
            )

    def promote(
        self, ref: str, alias: str | None = None, reason: str = "", actor: str | None = None
    ) -> AliasMove:
        """Point the champion alias (or `alias`) at the version `ref` names."""
        mv = self.resolve(ref)
        alias = alias or self.ws.config.registry.champion_alias
        return self.set_alias(mv.name, alias, mv.version, reason=reason, actor=actor)

    def remove_alias(
        self, name: str, alias: str, reason: str = "", actor: str | None = None
    ) -> AliasMove:
        actor = actor or current_user()
        with self.ws.db.write() as conn:
            now = time.time()
            previous = conn.exec_driver_sql(
                "SELECT version FROM model_alias WHERE model_name = ? AND alias = ?", (name, alias)
            ).scalar()
            if previous is None:
                raise NotFound(f"Model {name!r} has no alias {alias!r}.")
            conn.exec_driver_sql(
                "DELETE FROM model_alias WHERE model_name = ? AND alias = ?", (name, alias)
            )
            conn.exec_driver_sql(
                "INSERT INTO alias_event (model_name, alias, kind, from_version, to_version, at, "
                "actor, reason) VALUES (?, ?, 'remove', ?, NULL, ?, ?, ?)",
                (name, alias, previous, now, actor, reason),
            )
        return AliasMove(name, alias, "remove", previous, None, now, actor, reason)

    def rollback(
        self,
        name: str,
        alias: str | None = None,
        to_version: int | None = None,
        reason: str = "",
        actor: str | None = None,
    ) -> AliasMove:
        """Move the alias back to the version it held before (an undo of the last move).

        Repeated rollbacks walk further back. Deleted versions are skipped.
        """
        alias = alias or self.ws.config.registry.champion_alias
        if to_version is None:
            to_version = self.rollback_target(name, alias)
        return self.set_alias(
            name, alias, to_version, reason=reason or "rollback", actor=actor, kind="rollback"
        )

    def rollback_target(self, name: str, alias: str | None = None) -> int:
        """The version `rollback` would move the alias back to (what a confirmation names)."""
        alias = alias or self.ws.config.registry.champion_alias
        stack = self._alias_stack(name, alias)
        existing = {v.version for v in self.versions(name) if v.status == "ready"}
        candidates = [
            v for v in stack[:-1] if v in existing and v != (stack[-1] if stack else None)
        ]
        if not candidates:
            raise Conflict(
                f"{name}@{alias} has no earlier version to roll back to "
                f"(history: {', '.join(map(str, stack)) or 'empty'})."
            )
        return candidates[-1]

    def _alias_stack(self, name: str, alias: str) -> builtins.list[int]:
        """Replay the history: a set pushes, a rollback pops back to its target."""
        stack: builtins.list[int] = []
        for mv in self.history(name, alias):
            if mv.kind == "set" and mv.to_version is not None:
                stack.append(mv.to_version)
            elif mv.kind == "rollback" and mv.to_version is not None:
                while stack and stack[-1] != mv.to_version:
                    stack.pop()
                if not stack:
                    stack.append(mv.to_version)
            elif mv.kind == "remove":
                stack.clear()
        return stack

    def history(self, name: str, alias: str | None = None) -> builtins.list[AliasMove]:
        """Every alias move of a model, in the order they were made (oldest first)."""
        sql = (
            "SELECT model_name, alias, kind, from_version, to_version, at, actor, reason "
            "FROM alias_event WHERE model_name = ?"
        )
        args: builtins.list[Any] = [name]
        if alias:
            sql += " AND alias = ?"
            args.append(alias)
        with self.ws.db.read() as conn:
            self._require_model(conn, name)
            return [
                AliasMove(*row) for row in conn.exec_driver_sql(sql + " ORDER BY id", tuple(args))
            ]

    def alias_at(self, name: str, alias: str, when: float) -> int | None:
        """Which version `alias` pointed to at time `when` (epoch seconds)."""
        with self.ws.db.read() as conn:
            self._require_model(conn, name)
            return conn.exec_driver_sql(
                "SELECT to_version FROM alias_event WHERE model_name = ? AND alias = ? AND at <= ? "
                "ORDER BY id DESC LIMIT 1",
                (name, alias, when),
            ).scalar()

    # --- life cycle ------------------------------------------------------------------------

    def set_status(self, ref: str, status: str) -> ModelVersion:
        mv = self.resolve(ref)
        if status == "archived" and mv.aliases:
            raise Conflict(
                f"{mv.ref} is still {', '.join('@' + a for a in mv.aliases)}; move or remove "
                "those aliases before archiving it."
            )
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "UPDATE model_version SET status = ? WHERE model_name = ? AND version = ?",
                (status, mv.name, mv.version),
            )
        return self.get_version(mv.name, mv.version)

    def archive(self, ref: str) -> ModelVersion:
        return self.set_status(ref, "archived")

    def restore(self, ref: str) -> ModelVersion:
        return self.set_status(ref, "ready")

    def delete_version(self, name: str, version: int) -> None:
        """Delete one version (never one an alias points to); `mlops gc` frees its bytes."""
        mv = self.get_version(name, version)
        if mv.aliases:
            raise Conflict(
                f"{mv.ref} is {', '.join('@' + a for a in mv.aliases)}; move those aliases "
                "first, so nothing points to a deleted version."
            )
        with self.ws.db.write() as conn:
            conn.exec_driver_sql(
                "DELETE FROM model_version WHERE model_name = ? AND version = ?", (name, version)
            )
            conn.exec_driver_sql(
                "DELETE FROM object_ref WHERE kind = 'model_version' AND owner = ?", (mv.ref,)
            )

    def delete_model(self, name: str, force: bool = False) -> int:
        """Delete a model and its versions; with aliases set it needs force=True."""
        with self.ws.db.write() as conn:
            self._require_model(conn, name)
            aliases = (
                conn.exec_driver_sql("SELECT alias FROM model_alias WHERE model_name = ?", (name,))
                .scalars()
                .all()
            )
            if aliases and not force:
                raise Conflict(
                    f"Model {name!r} still has aliases ({', '.join(aliases)}); pass --force to "
                    "delete it anyway."
                )
            n = conn.exec_driver_sql(
                "SELECT count(*) FROM model_version WHERE model_name = ?", (name,)
            ).scalar()
            conn.exec_driver_sql(
                "DELETE FROM object_ref WHERE kind = 'model_version' AND substr(owner, 1, ?) = ?",
                (len(name) + 1, name + "/"),
            )
            conn.exec_driver_sql("DELETE FROM registered_model WHERE name = ?", (name,))
        return n

    def card(self, ref: str) -> dict[str, Any]:
        from mlops_console.registry.cards import model_card

        return model_card(self, self.resolve(ref))
