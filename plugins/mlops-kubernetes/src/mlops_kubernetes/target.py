"""The `kubernetes` target: render the manifests (plain or KServe), check them, and apply
them with the user's kubectl when it has a context; without one, render only and say so.

What it serves is kept beside the deployment (`.mlops/deployments/NAME/kubernetes.json`:
the primary and the canary release), so promote and rollback re-render the whole set and
apply it again: the files in the render folder are always what the cluster should run."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from mlops_console.deploy.base import Capability, DeployError, DeployTarget
from mlops_console.errors import ConfigError
from mlops_console.names import check_name, inside
from mlops_kubernetes import manifests as mf
from mlops_kubernetes.kubectl import Kubectl
from mlops_kubernetes.options import DNS_LABEL, KubeOptions
from mlops_kubernetes.preflight import check as preflight
from mlops_kubernetes.render import render

STATE = "kubernetes.json"


class KubernetesTarget(DeployTarget):
    name = "kubernetes"
    # a canary: the plain form's second Deployment, or KServe's canaryTrafficPercent in
    # serverless mode (refused in raw mode); prediction logs: copied out of the plain
    # form's pods with kubectl cp
    capabilities = frozenset({Capability.CANARY, Capability.REMOTE_LOGS})

    # --- records beside the deployment ---------------------------------------------------

    def _dir(self, name: str) -> Path:
        d = inside(self.ws.state / "deployments", check_name("deployment", name))
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d

    def _token(self, name: str, kind: str = "admin") -> str:
        """The deployment's token (the same file the local and docker targets keep), which
        the Secret carries into the cluster."""
        f = self._dir(name) / f"{kind}-token"
        if not f.exists():
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return f.read_text().strip()

    def _state(self, name: str) -> dict[str, Any]:
        f = self._dir(name) / STATE
        return json.loads(f.read_text()) if f.exists() else {}

    def _save(self, name: str, state: dict[str, Any]) -> None:
        f = self._dir(name) / STATE
        tmp = f.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, f)

    @staticmethod
    def _check_name(name: str) -> None:
        if not DNS_LABEL.match(name) or len(name) > 56:
            raise ConfigError(
                f"Deployment name {name!r} cannot name Kubernetes objects: use --name with at "
                "most 56 lower-case letters, digits and '-' (the canary adds '-canary')."
            )

    def _options(self, config: dict[str, Any] | None) -> KubeOptions:
        return KubeOptions.from_config(config or {})

    def _config(self, name: str) -> dict[str, Any]:
        rec = self.ws.deployments.find(name)
        return rec.config if rec is not None else {}

    def _release(self, bundle: Path, config: dict[str, Any], digest: str | None) -> mf.Release:
        raw = (bundle / "bundle.json").read_bytes()
        manifest = json.loads(raw)
        runtime = config.get("runtime") or (
            "onnx" if (bundle / "model.onnx").exists() else "sklearn"
        )
        if runtime == "onnx" and not (bundle / "model.onnx").exists():
            raise ConfigError("This bundle has no ONNX model; deploy it with --runtime sklearn.")
        return mf.Release(
            bundle=bundle.name,
            version=int(manifest["version"]),
            digest=digest or hashlib.sha256(raw).hexdigest(),
            runtime=runtime,
        )

    def _endpoint(self, name: str, opts: KubeOptions) -> str:
        if opts.form == "kserve":
            return f"http://{name}-predictor.{opts.namespace}.svc"
        return f"http://{name}.{opts.namespace}.svc:{mf.PORT}"

    def _env(self, name: str, opts: KubeOptions) -> dict[str, str]:
        """The server's settings ([serving] of mlops.toml), and the names it answers to in
        the cluster (its admin API refuses other Host headers)."""
        env = self.ws.config.serving.server_env()
        hosts = [h for h in env.get("MLOPS_ALLOWED_HOSTS", "").split(",") if h]
        ns = opts.namespace
        hosts += [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
        env["MLOPS_ALLOWED_HOSTS"] = ",".join(dict.fromkeys(hosts))
        return env

    def _tokens(self, name: str) -> dict[str, str]:
        tokens = {"admin": self._token(name)}
        if self.ws.config.serving.feedback_token:
            tokens["feedback"] = self._token(name, "feedback")
        return tokens

    # --- the one path every verb takes ---------------------------------------------------

    def _roll_out(self, name: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """Render `state` (checked), apply it where kubectl can, then record it."""
        opts = self._options(config)
        folder = Path(opts.render) if opts.render else self._dir(name) / "manifests"
        bundles = {
            r["bundle"]: Path(r["path"])
            for r in filter(None, (state.get("primary"), state.get("canary")))
        }
        primary = mf.Release(**{k: v for k, v in state["primary"].items() if k != "path"})
        canary = (
            mf.Release(**{k: v for k, v in state["canary"].items() if k != "path"})
            if state.get("canary")
            else None
        )
        if opts.form == "kserve":
            files = mf.inference_service(
                name,
                canary or primary,
                opts,
                canary_percent=state.get("percent") if canary else None,
            )
        else:
            files = mf.plain(
                name,
                primary,
                opts,
                self._env(name, opts),
                self._tokens(name),
                canary=canary,
                percent=float(state.get("percent") or 0.0),
            )
        written = render(folder, name, files, bundles if opts.form == "kserve" else {}, opts)
        kc = Kubectl(opts.context, opts.namespace)
        why = "-o apply=false" if not opts.apply else kc.why_not()
        info: dict[str, Any] = {
            "name": name,
            "target": self.name,
            "endpoint": self._endpoint(name, opts),
            "manifests": str(folder),
        }
        if why is not None:
            # the one line a user reads: nothing in a cluster changed
            print(
                f"kubernetes: wrote {len(written)} manifest{'s' if len(written) != 1 else ''} to "
                f"{folder}; not applied ({why}): "
                "render only.",
                file=sys.stderr,
            )
            self._save(name, state)
            return {**info, "status": "rendered", "applied": False, "reason": why}
        kc.apply(written)
        if opts.form == "plain" and canary is None:
            kc.run("delete", "deployment", f"{name}-canary", "--ignore-not-found")
        if opts.wait:
            self._wait(kc, name, opts, canary is not None)
        self._save(name, state)
        return {**info, "status": "running", "applied": True, "context": kc.context}

    def _wait(self, kc: Kubectl, name: str, opts: KubeOptions, with_canary: bool) -> None:
        timeout = f"--timeout={opts.wait}s"
        if opts.form == "kserve":
            kc.run(
                "wait",
                "--for=condition=Ready",
                f"inferenceservice/{name}",
                timeout,
                timeout=opts.wait + 30,
            )
            return
        for obj in [name, *([f"{name}-canary"] if with_canary else [])]:
            r = kc.run(
                "rollout",
                "status",
                f"deployment/{obj}",
                timeout,
                timeout=opts.wait + 30,
                check=False,
            )
            if r.returncode != 0:
                raise DeployError(
                    f"{obj} did not roll out within {opts.wait} s ({(r.stderr or r.stdout).strip()[-300:]}); "
                    "its old pods keep serving (maxUnavailable 0). `mlops deployments logs "
                    f"{name}` shows the new pods' logs; `kubectl rollout undo deployment/{obj}` goes back."
                )

    def _entry(self, bundle: Path, config: dict[str, Any], digest: str | None) -> dict[str, Any]:
        """A release checked by the preflight, as the state file keeps it."""
        opts = self._options(config)
        release = self._release(bundle, config, digest)
        preflight(bundle, release.runtime, opts, release.digest)
        return {**asdict(release), "path": str(bundle)}

    # --- the verbs -----------------------------------------------------------------------

    def create(
        self, name: str, bundle: Path, config: dict[str, Any], digest: str | None = None
    ) -> dict[str, Any]:
        self._check_name(name)
        return self._roll_out(name, config, {"primary": self._entry(bundle, config, digest)})

    def update(
        self,
        name: str,
        bundle: Path,
        config: dict[str, Any],
        role: str = "primary",
        percent: float = 0.0,
        digest: str | None = None,
    ) -> dict[str, Any]:
        self._check_name(name)
        opts = self._options(config)
        state = self._state(name)
        if role == "shadow":
            raise DeployError("The kubernetes target cannot run a shadow; use --strategy canary.")
        if role == "canary":
            if not state.get("primary"):
                raise DeployError(f"{name} has no primary version here; deploy one first.")
            if opts.form == "kserve" and opts.kserve_mode != "serverless":
                raise ConfigError(mf.refuse_raw_canary(name))  # before anything is written
            if opts.form == "kserve" and percent != round(percent):
                raise ConfigError(
                    f"KServe's canaryTrafficPercent is a whole number; use --canary-percent "
                    f"{round(percent)} instead of {percent:g}."
                )
            return self._roll_out(
                name,
                config,
                {
                    "primary": state["primary"],
                    "canary": self._entry(bundle, config, digest),
                    "percent": percent,
                },
            )
        return self._roll_out(name, config, {"primary": self._entry(bundle, config, digest)})

    def promote(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        state = self._state(name)
        if not state.get("canary"):
            raise DeployError(f"{name} has no canary on the kubernetes target to promote.")
        return self._roll_out(name, config, {"primary": state["canary"]})

    def rollback(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        state = self._state(name)
        if not state.get("primary"):
            raise DeployError(f"{name} has nothing deployed on the kubernetes target.")
        return self._roll_out(name, config, {"primary": state["primary"]})

    def delete(self, name: str, config: dict[str, Any] | None = None) -> None:
        opts = self._options(config)
        kc = Kubectl(opts.context, opts.namespace)
        if not opts.apply or kc.why_not() is not None:
            return  # nothing was applied from here: the rendered files stay the user's
        kinds = "inferenceservice" if opts.form == "kserve" else "deployment,service,hpa,pdb,secret"
        kc.run("delete", kinds, "-l", f"{mf.LABEL}={name}", "--ignore-not-found", "--wait=false")

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        opts = self._options(config)
        info: dict[str, Any] = {
            "name": name,
            "target": self.name,
            "endpoint": self._endpoint(name, opts),
        }
        kc = Kubectl(opts.context, opts.namespace)
        why = "-o apply=false" if not opts.apply else kc.why_not()
        if why is not None:
            return {**info, "status": "rendered", "reason": f"render only: {why}"}
        if opts.form == "kserve":
            obj = kc.get_json("inferenceservice", name)
            if obj is None:
                return {**info, "status": "stopped"}
            status = obj.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            return {
                **info,
                "status": "running" if ready else "starting",
                "url": status.get("url"),
                "traffic": (status.get("components") or {}).get("predictor", {}).get("traffic"),
            }
        obj = kc.get_json("deployment", name)
        if obj is None:
            return {**info, "status": "stopped"}
        st = obj.get("status") or {}
        ready = int(st.get("readyReplicas") or 0)
        return {
            **info,
            "status": "running" if ready > 0 else "starting",
            "ready": ready,
            "replicas": int(st.get("replicas") or 0),
        }

    def status(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Pods of the primary and the canary, ready or not (request counts and latency are
        per pod in each pod's /metrics: a cluster's Prometheus aggregates them)."""
        opts = self._options(config)
        kc = Kubectl(opts.context, opts.namespace)
        if kc.why_not() is not None:
            return {}
        out: dict[str, Any] = {}
        for pod in kc.pods(f"{mf.LABEL}={name}"):
            role = pod["metadata"].get("labels", {}).get(mf.ROLE, "primary")
            ready = all(
                c.get("ready") for c in pod.get("status", {}).get("containerStatuses") or [{}]
            )
            entry = out.setdefault(f"{role}_pods", {"ready": 0, "pods": 0})
            entry["pods"] += 1
            entry["ready"] += int(ready)
        return out

    def list(self) -> builtins.list[str]:
        kc = Kubectl(None, "default")
        if kc.why_not() is not None:
            return []
        r = kc.run(
            "get",
            "deployments,inferenceservices",
            "--all-namespaces",
            "-l",
            mf.LABEL,
            "-o",
            "json",
            check=False,
        )
        if r.returncode != 0:  # no KServe CRD in this cluster: deployments alone
            r = kc.run("get", "deployments", "--all-namespaces", "-l", mf.LABEL, "-o", "json")
        items = json.loads(r.stdout).get("items", [])
        return sorted({i["metadata"]["labels"][mf.LABEL] for i in items})

    def logs(self, name: str, tail: int = 100) -> str:
        opts = self._options(self._config(name))
        kc = Kubectl(opts.context, opts.namespace)
        why = kc.why_not()
        if why is not None:
            return f"(no logs: {name} was rendered only, {why})"
        selector = (
            f"serving.kserve.io/inferenceservice={name}"
            if opts.form == "kserve"
            else f"{mf.LABEL}={name}"
        )
        r = kc.run(
            "logs",
            "-l",
            selector,
            f"--tail={int(tail)}",
            "--prefix",
            "--all-containers",
            "--max-log-requests=20",
        )
        return r.stdout

    def predict(
        self,
        name: str,
        config: dict[str, Any],
        records: builtins.list[dict[str, Any]],
        output: str = "predict",
    ) -> builtins.list:
        """Through `kubectl port-forward` to the Service (the plain form, which speaks our
        /invocations); send KServe's v2 requests to the InferenceService's URL yourself."""
        opts = self._options(config)
        if opts.form == "kserve":
            raise DeployError(
                f"{name} is served by KServe: send Open Inference v2 requests to its URL "
                f"(`mlops deployments status {name}`)."
            )
        kc = Kubectl(opts.context, opts.namespace)
        why = kc.why_not()
        if why is not None:
            raise DeployError(f"{name} was rendered only ({why}): nothing serves it.")
        with self._forward(kc, name) as port:
            r = httpx.post(
                f"http://127.0.0.1:{port}/invocations?output={output}",
                json={"dataframe_records": records},
                timeout=60,
            )
        if r.status_code != 200:
            raise DeployError(f"{name}: {r.json().get('message', r.text)}")
        return r.json()["predictions"]

    def _forward(self, kc: Kubectl, name: str):
        from contextlib import contextmanager

        @contextmanager
        def forward():
            proc = subprocess.Popen(
                # ":PORT": a free local port, on loopback only
                [
                    *kc._base(),
                    "port-forward",
                    "--address",
                    "127.0.0.1",
                    f"svc/{name}",
                    f":{mf.PORT}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                line = proc.stdout.readline() if proc.stdout else ""
                m = re.search(r"127\.0\.0\.1:(\d+)", line)
                if not m:
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                    raise DeployError(
                        f"kubectl port-forward to {name} did not start: {err or line}".strip()
                    )
                yield int(m.group(1))
            finally:
                proc.terminate()
                proc.wait(timeout=10)

        return forward()

    def fetch_prediction_logs(self, name: str, config: dict[str, Any], dest: Path) -> int:
        """Copy closed segments (`*.jsonl`) out of each running pod's /logs volume with
        kubectl cp, then delete them there (the plain form; KServe's servers write none)."""
        opts = self._options(config)
        if opts.form != "plain":
            return 0
        kc = Kubectl(opts.context, opts.namespace)
        if kc.why_not() is not None:
            return 0
        dest = Path(dest)
        fetched = 0
        for pod in kc.pods(f"{mf.LABEL}={name}"):
            if pod.get("status", {}).get("phase") != "Running":
                continue
            pod_name = pod["metadata"]["name"]
            listed = kc.run("exec", pod_name, "-c", "server", "--", "ls", "-1", "/logs")
            names = [n for n in listed.stdout.split() if re.fullmatch(r"[\w.-]+\.jsonl", n)]
            for seg in names:
                stem = seg.removesuffix(".jsonl")
                tmp = dest / f".{stem}-{pod_name}.part"
                kc.run("cp", "-c", "server", f"{opts.namespace}/{pod_name}:/logs/{seg}", str(tmp))
                os.chmod(tmp, 0o600)
                # the pod's name keeps two pods' segments of the same millisecond apart
                os.replace(tmp, dest / f"{stem}-{pod_name}.jsonl")
                kc.run("exec", pod_name, "-c", "server", "--", "rm", "-f", f"/logs/{seg}")
                fetched += 1
        return fetched
