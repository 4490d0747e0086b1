"""`ws.monitor`: collect, measure per window, import labels, export the feedback dataset.

Windows are rolling: "1h" is the hour up to now; the window before it is the hour
before that, and so on. A window measures the rows of one version (the deployment's
primary by default) against that version's training reference.

A deployment served by many devices (a fleet) is also measured per device and per group
of devices: the same version, the same reference, only those devices' rows. Which devices
and groups a deployment has comes from its target's `scopes` hook, plus every device whose
segments were collected (`STEM--DEVICE`); `NAME--DEVICE` names one device of `NAME`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_console.durations import parse_duration
from mlops_console.errors import MlopsError, NotFound
from mlops_console.monitoring import collect as col
from mlops_console.monitoring import scopes as fleet_scopes
from mlops_console.monitoring.window import WindowReport
from mlops_console.names import is_name

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlops_console.workspace import Workspace


class Monitor:
    def __init__(self, ws: Workspace):
        self.ws = ws

    @property
    def cfg(self):
        """[monitoring] as the workspace has it now (the daemon reloads an edited mlops.toml)."""
        return self.ws.config.monitoring

    # --- collection ------------------------------------------------------------------

    def deployments(self) -> list[str]:
        recorded = {d.name for d in self.ws.deployments.list()}
        names = set(recorded)
        folder = self.ws.state / "logs" / "predictions"
        if folder.is_dir():
            names |= {
                p.name
                for p in folder.iterdir()
                if p.is_dir()
                and is_name("deployment", p.name)
                # NAME--DEVICE of a recorded NAME is one device of it, not a deployment
                and p.name.rpartition(col.DEVICE_SEP)[0] not in recorded
            }
        return sorted(names)

    # --- scopes: devices and groups of a fleet (scopes.py) ----------------------------

    def resolve(self, name: str) -> tuple[str, str | None]:
        """(deployment, device): `NAME--DEVICE` is device DEVICE of deployment NAME."""
        return fleet_scopes.resolve(self.ws, name)

    def scopes(self, deployment: str, seen: set[str] | None = None) -> dict[str, list[str]]:
        """Each device of a deployment with the groups it is in ({} for one server)."""
        return fleet_scopes.device_groups(self.ws, deployment, seen)

    def scope_devices(
        self, deployment: str, device: str | None = None, group: str | None = None
    ) -> tuple[str | None, list[str] | None]:
        """The scope ("device D", "group G" or None) and the devices it measures."""
        return fleet_scopes.scope_devices(self.scopes(deployment), deployment, device, group)

    def all_scopes(self, deployment: str, seen: set[str] | None = None) -> dict[str, list[str]]:
        """Each device, and each group that is not the whole deployment (-> its devices)."""
        return fleet_scopes.all_scopes(self.scopes(deployment, seen))

    def collect(self, deployment: str | None = None) -> dict[str, dict[str, int]]:
        names = [self.resolve(deployment)[0]] if deployment else self.deployments()
        out = {}
        for n in names:
            fetched = self._fetch_remote(n)
            out[n] = col.collect(self.ws, n)
            if fetched:
                out[n]["fetched"] = fetched
        return out

    def _fetch_remote(self, name: str) -> int:
        """Targets whose prediction logs live elsewhere bring their segments here first."""
        from mlops_console.deploy.base import Capability

        rec = self.ws.deployments.find(name)
        if rec is None or not rec.running:
            return 0
        try:
            target = self.ws.deployments.target(rec.target)
            if Capability.REMOTE_LOGS not in target.capabilities:
                return 0
            dest = col.log_dir(self.ws, name)
            dest.mkdir(parents=True, exist_ok=True)
            return int(target.fetch_prediction_logs(name, rec.config, dest) or 0)
        except Exception as exc:  # an unreachable device is retried at the next collection
            log.warning("prediction logs of %s not fetched: %s: %s", name, type(exc).__name__, exc)
            return 0

    def prune(self) -> int:
        """Remove collected files older than [monitoring].keep_days; returns how many."""
        limit = time.time() - self.cfg.keep_days * 86400
        removed = 0
        root = self.ws.state / "monitoring"
        for path in root.glob("*/*/*.parquet") if root.is_dir() else []:
            if path.parent.name in ("rows", "requests") and path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def frames(
        self,
        deployment: str,
        start: float,
        end: float,
        kinds: tuple[str, ...] = ("rows", "requests", "feedback"),
        devices: list[str] | None = None,
    ):
        """Rows and requests in [start, end), collected and live; all feedback.

        Rows and requests carry the `device` that served them ("" for one server);
        `devices` keeps only theirs (`NAME--DEVICE` as the deployment: that device's)."""
        import duckdb
        import pandas as pd

        deployment, device = self.resolve(deployment)
        if device is not None:
            devices = [device]
        base = col.monitor_dir(self.ws, deployment)
        live = col.live_segments(self.ws, deployment)
        out: dict[str, Any] = {k: None for k in ("rows", "requests", "feedback")}
        con = duckdb.connect()
        try:
            for kind in kinds:
                parts = []
                if any((base / kind).glob("*.parquet")):
                    # paths and bounds are bound, never pasted: a workspace may live in o'brien/
                    if kind == "feedback":
                        sql = "SELECT * FROM read_parquet(?, union_by_name = true)"
                        bounds: list[Any] = []
                    else:
                        # the device is the file's name after "--" (collect.segment_device)
                        sql = (
                            "SELECT * EXCLUDE (filename), regexp_extract(filename, "
                            "'--([^/]*)[.]parquet$', 1) AS device "
                            "FROM read_parquet(?, union_by_name = true, filename = true) "
                            "WHERE ts >= ? AND ts < ?"
                        )
                        bounds = [start, end]
                        if devices is not None:
                            sql = f"SELECT * FROM ({sql}) WHERE list_contains(?, device)"
                            bounds.append(list(devices))
                    parts.append(con.execute(sql, [f"{base / kind}/*.parquet", *bounds]).df())
                build = {
                    "rows": col.rows_table,
                    "requests": col.requests_table,
                    "feedback": col.feedback_table,
                }[kind]
                for dev, parsed in live:
                    if not parsed[kind] or (
                        kind != "feedback" and devices is not None and dev not in devices
                    ):
                        continue
                    frame = build(parsed[kind]).to_pandas()
                    if kind != "feedback":
                        frame = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
                        frame["device"] = dev
                    parts.append(frame)
                parts = [p for p in parts if len(p)]
                out[kind] = pd.concat(parts, ignore_index=True) if parts else None
        finally:
            con.close()
        return out["rows"], out["requests"], out["feedback"]

    # --- measures --------------------------------------------------------------------

    def measure(
        self,
        deployment: str,
        window: str | float | None = None,
        end: float | None = None,
        version: int | None = None,
        collect_first: bool = True,
        device: str | None = None,
        group: str | None = None,
    ) -> WindowReport:
        """Every measure of one window of a deployment (see measures.py), or of one of
        its devices or groups (`NAME--DEVICE` is `device=DEVICE` of NAME)."""
        deployment, named = self.resolve(deployment)
        if named is not None and group is None:
            device = device or named
        if deployment not in self.deployments():
            raise NotFound(
                f"No deployment {deployment!r} and no prediction log for it. "
                "`mlops deployments list` shows them."
            )
        if collect_first:
            col.collect(self.ws, deployment)
        scope, devices = self.scope_devices(deployment, device, group)
        w = parse_duration(window or self.cfg.window, "window")
        end = end if end is not None else time.time()
        rows, requests, feedback = self.frames(deployment, end - w, end, devices=devices)
        return self._report(
            deployment, window, w, end, rows, requests, feedback, version, scope, devices
        )

    def measure_scopes(
        self,
        deployment: str,
        window: str | float | None = None,
        end: float | None = None,
        collect_first: bool = True,
    ) -> dict[str, WindowReport]:
        """One window of the whole deployment ("") and of each device and group of it
        (`all_scopes`), from one read of its logs."""
        deployment, _ = self.resolve(deployment)
        if deployment not in self.deployments():
            raise NotFound(f"No deployment {deployment!r} and no prediction log for it.")
        if collect_first:
            col.collect(self.ws, deployment)
        w = parse_duration(window or self.cfg.window, "window")
        end = end if end is not None else time.time()
        rows, requests, feedback = self.frames(deployment, end - w, end)
        out = {"": self._report(deployment, window, w, end, rows, requests, feedback)}
        # the devices seen are those of the window (no listing of every collected file)
        seen = set() if rows is None else set(rows["device"].unique())
        for scope, devices in self.all_scopes(deployment, seen).items():
            out[scope] = self._report(
                deployment,
                window,
                w,
                end,
                None if rows is None else rows[rows["device"].isin(devices)],
                None if requests is None else requests[requests["device"].isin(devices)],
                feedback,
                scope=scope,
                devices=devices,
            )
        return out

    def _report(
        self,
        deployment: str,
        window: str | float | None,
        w: float,
        end: float,
        rows,
        requests,
        feedback,
        version: int | None = None,
        scope: str | None = None,
        devices: list[str] | None = None,
    ) -> WindowReport:
        from mlops_console.monitoring import measures
        from mlops_console.monitoring.drift import Thresholds
        from mlops_console.monitoring.reference import load_reference

        start = end - w
        rec = self.ws.deployments.find(deployment)
        import pandas as pd

        served = rows[rows["role"] != "shadow"] if rows is not None else pd.DataFrame()
        versions: list[dict[str, Any]] = []
        if len(served):
            counts = served.groupby(["version", "role"]).size().reset_index(name="rows")
            versions = counts.to_dict("records")
        if version is None:
            version = rec.version if rec else None
            if len(served) and (version is None or not (served["version"] == version).any()):
                version = int(served["version"].value_counts().idxmax())
        req = requests[requests["role"] != "shadow"] if requests is not None else None
        performance = measures.performance(req if req is not None else pd.DataFrame(), w)
        if rec is not None and scope is None:
            performance.update(self._live_memory(deployment))
        mine = served[served["version"] == version] if len(served) else served
        model = rec.model if rec else None
        out = WindowReport(
            deployment=deployment,
            window=window or self.cfg.window,
            start=start,
            end=end,
            model=model,
            versions=versions,
            version=version,
            performance=performance,
            rows=len(mine),
            scope=scope,
            devices=devices,
        )
        if model is None or version is None:
            out.note = "no rows served in this window"
            return out
        mv = self.ws.models.get_version(model, int(version))
        out.staleness = self._staleness(mv)
        try:
            ref = load_reference(self.ws, mv)
        except NotFound as exc:
            out.note = str(exc)
            return out
        t = Thresholds(
            psi=self.cfg.psi,
            ks_statistic=self.cfg.ks_statistic,
            ks_pvalue=self.cfg.ks_pvalue,
            js=self.cfg.js,
            drift_share=self.cfg.drift_share,
        )
        out.enough_rows = len(mine) >= self.cfg.min_rows
        if len(mine):
            out.drift = measures.drift(mine, ref, t)
            out.stability = measures.stability(mine, ref)
            out.decay = measures.decay(mine, feedback, ref, mv.metrics)
        if not out.enough_rows:
            out.note = (
                f"{len(mine)} rows of version {version} in this window; verdicts need "
                f"[monitoring] min_rows = {self.cfg.min_rows}"
            )
        return out

    def history(
        self,
        deployment: str,
        window: str | None = None,
        count: int = 24,
        device: str | None = None,
        group: str | None = None,
    ) -> list[WindowReport]:
        """The last `count` windows, newest first."""
        w = parse_duration(window or self.cfg.window, "window")
        now = time.time()
        col.collect(self.ws, self.resolve(deployment)[0])
        return [
            self.measure(
                deployment,
                window or self.cfg.window,
                end=now - i * w,
                collect_first=False,
                device=device,
                group=group,
            )
            for i in range(count)
        ]

    def performance_series(
        self, deployment: str, window: str | float = "5m", count: int = 12
    ) -> list[dict[str, Any]]:
        """Requests per second, p99 and error rate per window, oldest first (one read of
        the requests; cheap enough for the console's sparklines)."""
        import numpy as np

        w = parse_duration(window, "window")
        end = time.time()
        start = end - w * count
        _, requests, _ = self.frames(deployment, start, end, kinds=("requests",))
        out = []
        for i in range(count):
            lo, hi = start + i * w, start + (i + 1) * w
            part = (
                None
                if requests is None
                else requests[(requests["ts"] >= lo) & (requests["ts"] < hi)]
            )
            n = 0 if part is None else len(part)
            ok = part[part["status"] == 200] if part is not None and n else None
            out.append(
                {
                    "end": hi,
                    "rps": n / w,
                    "p99_ms": (
                        float(np.percentile(ok["latency_ms"], 99))
                        if ok is not None and len(ok)
                        else None
                    ),
                    "error_rate": (n - len(ok)) / n if ok is not None else None,
                }
            )
        return out

    def _live_memory(self, deployment: str) -> dict[str, Any]:
        try:
            status = self.ws.deployments.status(deployment)
        except Exception:  # a stopped server has no live figures
            return {}
        rss = status.stats.get("rss_mb")
        return {"memory_mb": rss} if rss is not None else {}

    def _staleness(self, mv) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {"model_age_days": (now - mv.created_at) / 86400}
        newest = None
        for d in mv.lineage.get("datasets") or []:
            try:
                dv = self.ws.data.version(d["name"], int(str(d["version"]).lstrip("v")))
            except (NotFound, MlopsError, ValueError):
                continue
            newest = max(newest or 0.0, dv.created_at)
        if newest:
            out["data_age_days"] = (now - newest) / 86400
        return out

    # --- labels ----------------------------------------------------------------------

    def import_labels(
        self,
        deployment: str,
        path: str | Path,
        id_column: str = "request_id",
        label_column: str = "label",
        row_column: str | None = "row",
        entity_column: str | None = None,
        time_column: str | None = None,
    ) -> dict[str, Any]:
        from mlops_console.monitoring.labels import import_labels

        return import_labels(
            self,
            deployment,
            Path(path),
            id_column,
            label_column,
            row_column,
            entity_column,
            time_column,
        )

    def export_dataset(self, deployment: str, name: str | None = None) -> dict[str, Any]:
        from mlops_console.monitoring.labels import export_dataset

        return export_dataset(self, deployment, name)
