"""The manifests, as plain data: the plain form (Deployment, Service, HorizontalPodAutoscaler,
PodDisruptionBudget, the tokens' Secret) and the KServe form (an InferenceService v1beta1).

Pure functions of their inputs, so the golden files under tests/golden are exactly what a
deployment renders; the target decides what to serve and writes and applies them."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

from mlops_console.errors import ConfigError
from mlops_kubernetes.options import KubeOptions

PORT = 8080
LABEL = "mlops-console/deployment"  # on every object: `kubectl delete ... -l` finds them all
ROLE = "mlops-console/role"  # primary | canary: the pods of each Deployment
UID = 65532  # the serving image's own user (packaging/docker/Dockerfile)
SECRET_KEYS = {"admin": "admin-token", "feedback": "feedback-token"}
# KServe's names for its modes; the legacy ones, which every release since 0.7 reads (0.15+
# reads them as Knative / Standard), so one manifest works on old and new clusters alike
KSERVE_MODE = {"serverless": "Serverless", "raw": "RawDeployment"}


@dataclass(frozen=True)
class Release:
    """One model version as the cluster serves it."""

    bundle: str  # the bundle folder's name, e.g. v3-0123456789ab
    version: int
    digest: str  # the registry's sha256 of bundle.json: the server checks it at start
    runtime: str  # sklearn | onnx


@dataclass(frozen=True)
class Split:
    """How pods are shared between the primary and a canary Deployment."""

    primary: int
    canary: int

    @property
    def percent(self) -> float:
        return round(100.0 * self.canary / (self.primary + self.canary), 1)


def pod_split(percent: float, opts: KubeOptions) -> Split:
    """Pods for a plain canary: a Service spreads requests evenly over ready pods, so the
    canary's share is its share of pods. The smallest pod count from `replicas` up to
    `max_replicas` that comes within max(1 point, a tenth of the share) of `percent`, or a
    ConfigError saying what would work."""
    if not 0 < percent < 100:
        raise ConfigError(f"A canary takes between 0 and 100% of traffic, not {percent}%.")
    tolerance = max(1.0, percent / 10)
    for total in range(max(opts.replicas, 2), opts.max_replicas + 1):
        canary = round(total * percent / 100)
        if 1 <= canary < total and abs(100.0 * canary / total - percent) <= tolerance:
            return Split(total - canary, canary)
    needed = math.ceil(100 / percent) if percent < 50 else math.ceil(100 / (100 - percent))
    raise ConfigError(
        f"A {percent:g}% canary needs about {needed} pods in all (the plain form splits "
        f"traffic by pods, one canary pod in {needed}), and -o max_replicas={opts.max_replicas} "
        f"allows fewer. Raise -o max_replicas to {needed}, choose --canary-percent "
        f"{math.ceil(100 / opts.max_replicas)} or more, or use -o form=kserve -o "
        "kserve_mode=serverless, which splits requests rather than pods."
    )


def _meta(obj: str, app: str, opts: KubeOptions, **labels: str) -> dict[str, Any]:
    """Metadata of object `obj` of deployment `app` (its name is the app's name)."""
    return {
        "name": obj,
        "namespace": opts.namespace,
        "labels": {
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/managed-by": "mlops-console",
            **labels,
        },
    }


def image_for(name: str, release: Release, opts: KubeOptions) -> str:
    """The plain form's image: `-o image` with {name}, {bundle} and {version} filled in
    (by default the tag `mlops deploy --target docker` builds: mlops-serve-NAME:BUNDLE)."""
    try:
        return opts.image.format(name=name, bundle=release.bundle, version=release.version).lower()
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"-o image={opts.image!r} may use only {{name}}, {{bundle}} and {{version}}."
        ) from None


def secret(name: str, opts: KubeOptions, tokens: dict[str, str]) -> dict[str, Any]:
    """The tokens' Secret; its values are the deployment's own tokens (never in env)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(f"{name}-tokens", name, opts, **{LABEL: name}),
        "type": "Opaque",
        "data": {
            SECRET_KEYS[kind]: base64.b64encode(value.encode()).decode()
            for kind, value in sorted(tokens.items())
        },
    }


def _container(
    name: str,
    release: Release,
    opts: KubeOptions,
    env: dict[str, str],
    tokens: list[str],
) -> dict[str, Any]:
    command = [
        "/opt/serve/bin/python",
        "-m",
        "mlops_console.serving.app",
        "/bundle",
        "--host",
        "0.0.0.0",  # the pod's network: the Service and the kubelet's probes reach it there
        "--port",
        str(PORT),
        "--log-dir",
        "/logs",
        "--runtime",
        release.runtime,
    ]
    variables: list[dict[str, Any]] = [
        {"name": k, "value": v}
        for k, v in sorted({**env, "MLOPS_BUNDLE_DIGEST": release.digest}.items())
    ]
    for kind in sorted(tokens):
        variables.append(
            {
                "name": f"MLOPS_{kind.upper()}_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-tokens", "key": SECRET_KEYS[kind]}},
            }
        )
    return {
        "name": "server",
        "image": image_for(name, release, opts),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": variables,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            # /ping fails when a scoring loop died or is stuck: the kubelet restarts the pod
            "httpGet": {"path": "/ping", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/ping", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "resources": {
            "requests": {"cpu": opts.cpu, "memory": opts.memory},
            "limits": {"cpu": opts.cpu_limit, "memory": opts.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "logs", "mountPath": "/logs"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(
    name: str,
    release: Release,
    opts: KubeOptions,
    env: dict[str, str],
    tokens: list[str],
    role: str = "primary",
    replicas: int | None = None,
) -> dict[str, Any]:
    """A Deployment of the serving image. The primary's replica count is left to its HPA
    (a count here would reset the HPA's at every apply); a canary's is fixed."""
    obj = f"{name}-canary" if role == "canary" else name
    selector = {"app.kubernetes.io/name": name, ROLE: role}
    labels = {**selector, LABEL: name, "mlops-console/version": str(release.version)}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": labels,
                # prediction logs hold request inputs: they stay on the pod's own volume
                "annotations": {"mlops-console/bundle": release.bundle},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": UID,
                    "runAsGroup": UID,
                    "fsGroup": UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationGracePeriodSeconds": 30,
                "containers": [_container(name, release, opts, env, tokens)],
                "volumes": [
                    {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                ],
            },
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(obj, name, opts, **{LABEL: name, ROLE: role}),
        "spec": spec,
    }


def service(name: str, opts: KubeOptions) -> dict[str, Any]:
    """One Service over the primary's and the canary's pods alike (they share its selector)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, name, opts, **{LABEL: name}),
        "spec": {
            "type": opts.service_type,
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(name: str, opts: KubeOptions, minimum: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, name, opts, **{LABEL: name}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": minimum,
            "maxReplicas": max(minimum, opts.max_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": opts.target_cpu},
                    },
                }
            ],
        },
    }


def disruption_budget(name: str, opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, name, opts, **{LABEL: name}),
        "spec": {
            "minAvailable": opts.min_available,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        },
    }


def plain(
    name: str,
    primary: Release,
    opts: KubeOptions,
    env: dict[str, str],
    tokens: dict[str, str],
    canary: Release | None = None,
    percent: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """The plain form's files: {file name: object}. A canary is a second Deployment behind
    the same Service, with pods in proportion to its share (`pod_split`)."""
    kinds = sorted(tokens)
    files: dict[str, dict[str, Any]] = {"secret.yaml": secret(name, opts, tokens)}
    if canary is None:
        files["deployment.yaml"] = deployment(name, primary, opts, env, kinds)
        minimum = opts.replicas
    else:
        split = pod_split(percent, opts)
        files["deployment.yaml"] = deployment(name, primary, opts, env, kinds)
        files["deployment-canary.yaml"] = deployment(
            name, canary, opts, env, kinds, role="canary", replicas=split.canary
        )
        minimum = split.primary
    files["service.yaml"] = service(name, opts)
    files["hpa.yaml"] = autoscaler(name, opts, minimum)
    files["pdb.yaml"] = disruption_budget(name, opts)
    return files


def storage_uri(name: str, release: Release, opts: KubeOptions) -> str:
    """Where KServe reads the version's model files: under `-o storage_uri`, or on `-o pvc`."""
    if opts.storage_uri:
        return f"{opts.storage_uri}/{name}/{release.bundle}"
    base = (opts.pvc_path or name).strip("/")
    return f"pvc://{opts.pvc}/{base}/{release.bundle}"


def inference_service(
    name: str,
    release: Release,
    opts: KubeOptions,
    canary_percent: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The KServe form: one InferenceService. With `canary_percent` (serverless mode only:
    raw mode ignores the field, kserve #5335) `release` is the canary and KServe keeps the
    last ready revision for the rest of the traffic."""
    if canary_percent is not None and opts.kserve_mode != "serverless":
        raise ConfigError(refuse_raw_canary(name))
    model: dict[str, Any] = {
        "modelFormat": {
            "name": release.runtime,
            **({"version": "1"} if release.runtime == "sklearn" else {}),
        },
        # both speak the Open Inference Protocol v2 as our own server does; onnx needs it
        "protocolVersion": "v2",
        "storageUri": storage_uri(name, release, opts),
        "resources": {
            "requests": {"cpu": opts.cpu, "memory": opts.memory},
            "limits": {"cpu": opts.cpu_limit, "memory": opts.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            # KServe's sklearn server runs as a user; Triton's image (onnx) starts as root
            **({"runAsNonRoot": True} if release.runtime == "sklearn" else {}),
        },
    }
    if opts.kserve_runtime:
        model["runtime"] = opts.kserve_runtime
    predictor: dict[str, Any] = {
        "minReplicas": opts.replicas,
        "maxReplicas": opts.max_replicas,
        "automountServiceAccountToken": False,
        "model": model,
    }
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = round(canary_percent)
    meta = _meta(name, name, opts, **{LABEL: name, "mlops-console/version": str(release.version)})
    meta["annotations"] = {
        "serving.kserve.io/deploymentMode": KSERVE_MODE[opts.kserve_mode],
        "mlops-console/bundle": release.bundle,
        "mlops-console/digest": release.digest,
    }
    return {
        "inferenceservice.yaml": {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": meta,
            "spec": {"predictor": predictor},
        }
    }


def refuse_raw_canary(name: str) -> str:
    return (
        f"{name}: KServe in raw deployment mode ignores canaryTrafficPercent (kserve #5335), "
        "so the new version would silently take all of the traffic at once. Use -o kserve_mode=serverless "
        "(Knative) for a canary, or deploy with --strategy replace."
    )
