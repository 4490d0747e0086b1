"""The target's settings (`-o KEY=VALUE` on `mlops deploy`, or a pipeline's [deploy]
options), checked once: a wrong one is refused before anything is rendered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlops_console.errors import ConfigError

# the deployment's own settings, which the core keeps in the same config: not ours to check
OWNED = {"host", "port", "runtime"}

# name -> (what it is, default); the README's table says the same
SETTINGS: dict[str, tuple[str, Any]] = {
    "render": ("folder the manifests are written to (--render DIR)", None),
    "form": ("plain (Deployment, Service, HPA, PDB) or kserve (an InferenceService)", "plain"),
    "namespace": ("namespace of every object", "default"),
    "context": ("kubectl context to use (default: the current one)", None),
    "apply": ("false: render only, even where kubectl has a context", True),
    "image": (
        "plain form: the serving image; {name}, {bundle} and {version} are filled in",
        "mlops-serve-{name}:{bundle}",
    ),
    "replicas": ("pods at least (plain: the HPA's minimum; kserve: minReplicas)", 2),
    "max_replicas": ("pods at most (the HPA's maximum; kserve: maxReplicas)", 5),
    "cpu": ("CPU request per pod", "250m"),
    "memory": ("memory request per pod", "512Mi"),
    "cpu_limit": ("CPU limit per pod", "1"),
    "memory_limit": ("memory limit per pod", "1Gi"),
    "target_cpu": ("average CPU utilisation (%) the HPA keeps", 70),
    "min_available": ("pods the PodDisruptionBudget keeps through a drain", 1),
    "service_type": ("ClusterIP, NodePort or LoadBalancer", "ClusterIP"),
    "kserve_mode": ("serverless (Knative) or raw (RawDeployment / Standard)", "raw"),
    "kserve_version": ("KServe release whose sklearn server runs the model", "0.20"),
    "kserve_runtime": ("a ServingRuntime to name explicitly (default: KServe picks)", None),
    "storage_uri": ("object store prefix the model files are copied to (s3://, gs://, ...)", None),
    "pvc": ("a PersistentVolumeClaim holding the model files, instead of storage_uri", None),
    "pvc_path": ("folder inside the PVC (default: the deployment's name)", None),
    "runtime_sklearn": ("scikit-learn version of a custom runtime image", None),
    "runtime_joblib": ("joblib version of a custom runtime image", None),
    "wait": ("seconds to wait for the rollout after kubectl apply (0: do not wait)", 180),
}

FORMS = ("plain", "kserve")
MODES = {"serverless": "serverless", "knative": "serverless", "raw": "raw", "standard": "raw"}
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
VERSION = re.compile(r"^[0-9]+(\.[0-9]+){1,2}$")
URI = re.compile(r"^(s3|gs|https?|azure|hdfs|webhdfs|oci)://\S+$")


@dataclass(frozen=True)
class KubeOptions:
    render: str | None
    form: str
    namespace: str
    context: str | None
    apply: bool
    image: str
    replicas: int
    max_replicas: int
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str
    target_cpu: int
    min_available: int
    service_type: str
    kserve_mode: str
    kserve_version: str
    kserve_runtime: str | None
    storage_uri: str | None
    pvc: str | None
    pvc_path: str | None
    runtime_sklearn: str | None
    runtime_joblib: str | None
    wait: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KubeOptions:
        """The options in a deployment's config, or a ConfigError saying which is wrong."""
        unknown = sorted(k for k in config if k not in SETTINGS and k not in OWNED)
        if unknown:
            raise ConfigError(
                f"The kubernetes target has no option {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(sorted(SETTINGS))} (see plugins/mlops-kubernetes/README.md)."
            )
        v = {k: config.get(k, default) for k, (_, default) in SETTINGS.items()}
        _choice("form", v["form"], FORMS)
        mode = str(v["kserve_mode"]).lower()
        if mode not in MODES:
            raise ConfigError(
                f"-o kserve_mode={v['kserve_mode']!r} is not a KServe deployment mode; use "
                "serverless (Knative, which can split traffic for a canary) or raw."
            )
        v["kserve_mode"] = MODES[mode]
        if v["service_type"] not in SERVICE_TYPES:
            _choice("service_type", v["service_type"], SERVICE_TYPES)
        v["apply"] = _flag("apply", v["apply"])
        for key in ("replicas", "max_replicas", "target_cpu", "min_available", "wait"):
            v[key] = _whole(key, v[key], minimum=0 if key in ("min_available", "wait") else 1)
        if v["target_cpu"] > 100:
            raise ConfigError(f"-o target_cpu={v['target_cpu']} is a percentage: 1 to 100.")
        if v["max_replicas"] < v["replicas"]:
            raise ConfigError(
                f"-o max_replicas={v['max_replicas']} is below -o replicas={v['replicas']}; "
                "raise max_replicas or lower replicas."
            )
        if v["min_available"] >= v["replicas"] and v["min_available"] > 0:
            raise ConfigError(
                f"-o min_available={v['min_available']} leaves no pod to evict among "
                f"{v['replicas']} replicas, so a node drain would hang; keep it below replicas."
            )
        for key in ("cpu", "memory", "cpu_limit", "memory_limit"):
            v[key] = str(v[key])
            if not QUANTITY.match(v[key]):
                raise ConfigError(
                    f"-o {key}={v[key]!r} is not a Kubernetes quantity (e.g. 250m, 1, 512Mi, 2Gi)."
                )
        if not DNS_LABEL.match(str(v["namespace"])):
            raise ConfigError(
                f"-o namespace={v['namespace']!r} is not a Kubernetes name: lower-case letters, "
                "digits and '-', at most 63."
            )
        for key in ("runtime_sklearn", "runtime_joblib"):
            if v[key] is not None:
                v[key] = str(v[key])
                if not VERSION.match(v[key]):
                    raise ConfigError(f"-o {key}={v[key]!r} is not a version like 1.5.2.")
        v["kserve_version"] = str(v["kserve_version"]).removeprefix("v")
        if v["storage_uri"] is not None:
            v["storage_uri"] = str(v["storage_uri"]).rstrip("/")
            if not URI.match(v["storage_uri"]):
                raise ConfigError(
                    f"-o storage_uri={v['storage_uri']!r} is not an object store address; "
                    "use s3://BUCKET/PREFIX, gs://..., https://... (or -o pvc=CLAIM)."
                )
        if v["pvc"] is not None and not DNS_LABEL.match(str(v["pvc"])):
            raise ConfigError(f"-o pvc={v['pvc']!r} is not a PersistentVolumeClaim name.")
        if v["pvc_path"] is not None and (".." in str(v["pvc_path"]).split("/")):
            raise ConfigError(f"-o pvc_path={v['pvc_path']!r} may not contain '..'.")
        if v["form"] == "kserve" and (v["storage_uri"] is None) == (v["pvc"] is None):
            raise ConfigError(
                "The kserve form needs where KServe reads the model from: -o "
                "storage_uri=s3://BUCKET/PREFIX (an object store) or -o pvc=CLAIM, one of them."
            )
        return cls(**v)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"-o {key}={value!r} is not known; use {' or '.join(allowed)}.")


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"-o {key}={value!r} is not true or false.")


def _whole(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"-o {key}={value!r} is not a whole number.")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"-o {key}={value!r} is not a whole number.") from None
    if number < minimum:
        raise ConfigError(f"-o {key}={number} must be at least {minimum}.")
    return number
