"""The InferenceService's shape as KServe's published Python SDK states it, for CI: the
generated model classes in the `kserve` wheel (kserve/models/v1beta1_*.py) and the V1*
classes of the `kubernetes` client they refer to, each with `openapi_types` (attribute ->
type string) and `attribute_map` (attribute -> JSON key). The wheels are downloaded from
PyPI without their dependencies and never imported or installed: the two dicts are read
with ast.literal_eval, and a field is required where its generated setter refuses None.

`SdkModels.check(obj)` walks a rendered object strictly: a key the class does not map is
an error, every value has the type the SDK gives it, a required field must be there."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KSERVE = "0.21.0"
# The newest client with the same generator as kserve's SDK (python-legacy: "list[X]",
# "dict(str, X)", setters that refuse None); 36+ are pydantic models with other type names.
KUBERNETES = "35.0.0"
WHEELS = {
    "kserve": f"kserve-{KSERVE}-py3-none-any.whl",
    "kubernetes": f"kubernetes-{KUBERNETES}-py2.py3-none-any.whl",
}
PACKAGES = {"kserve": "kserve/models/", "kubernetes": "kubernetes/client/models/"}

# Resource quantities: the kubernetes client types them as plain strings (`dict(str, str)`
# for limits/requests), the API server and KServe's CRD take an integer or a quantity
# string. Only the fields an InferenceService can reach are listed.
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"),
    ("V1VolumeResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
}
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# kserve's SDK names a few Kubernetes types by Go package (K8sIoApiAppsV1DeploymentStrategy),
# the kubernetes client by version (V1DeploymentStrategy).
GO_PACKAGE_NAME = re.compile(r"^K8sIoApi[A-Z][a-z0-9]*(V\d+(?:(?:alpha|beta)\d+)?)([A-Z]\w*)$")
SCALARS = {"object", "str", "datetime", "date", "bool", "int", "float", "ResourceQuantity"}
NETWORK_ERRORS = (
    "NewConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Max retries exceeded",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ProxyError",
    "Could not fetch URL",
    "Connection refused",
)


class PypiUnreachable(Exception):
    """pip could not reach the package index (the tests skip, saying so)."""


def download_wheels(cache: Path) -> dict[str, Path]:
    """The pinned kserve and kubernetes wheels in `cache`, downloaded once (no dependencies)."""
    paths = {pkg: cache / name for pkg, name in WHEELS.items()}
    if all(_is_wheel(p) for p in paths.values()):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--timeout", "20"]
    cmd += ["--retries", "1", "-d", str(cache), f"kserve=={KSERVE}", f"kubernetes=={KUBERNETES}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        signs = [ln for ln in done.stderr.splitlines() if any(e in ln for e in NETWORK_ERRORS)]
        if signs:
            raise PypiUnreachable(f"pip could not reach the package index: {signs[-1][:300]}")
        raise RuntimeError(f"pip download of kserve/kubernetes failed:\n{done.stderr}")
    missing = [str(p) for p in paths.values() if not _is_wheel(p)]
    if missing:
        raise RuntimeError(f"pip download left no wheel at {missing}")
    return paths


def _is_wheel(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


@dataclass(frozen=True)
class Model:
    """One generated class: JSON key -> SDK type string, and the JSON keys it requires."""

    name: str
    fields: dict[str, str]
    required: frozenset[str]


class SchemaMismatch(AssertionError):
    """The object does not fit the SDK's classes; the message lists every path that fails."""


class SdkModels:
    """The generated classes of the wheels, parsed on first use."""

    def __init__(self, wheels: dict[str, Path]):
        self._zips = {pkg: zipfile.ZipFile(path) for pkg, path in wheels.items()}
        # "v1beta1predictorspec" -> (package, member): the file name is the class name in
        # snake case, except for acronyms (V1PodDNSConfig is v1_pod_dns_config.py).
        self._index: dict[str, tuple[str, str]] = {}
        for pkg, zf in self._zips.items():
            for member in zf.namelist():
                head, _, file = member.rpartition("/")
                if head + "/" == PACKAGES[pkg] and file.endswith(".py") and file[0] != "_":
                    self._index.setdefault(file[:-3].replace("_", ""), (pkg, member))
        self._models: dict[str, Model | None] = {}

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()

    def model(self, name: str) -> Model | None:
        """The class `name` (or None where neither wheel defines it)."""
        if name not in self._models:
            self._models[name] = self._parse(name)
        return self._models[name]

    def _parse(self, name: str) -> Model | None:
        where = self._index.get(name.lower())
        if where is None:
            return None
        pkg, member = where
        tree = ast.parse(self._zips[pkg].read(member))
        cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if cls is None:
            return None
        found: dict[str, Any] = {}
        required: set[str] = set()
        for node in cls.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map"):
                    found[target.id] = ast.literal_eval(node.value)
            elif isinstance(node, ast.FunctionDef) and _refuses_none(node):
                required.add(node.name)
        types, keys = found["openapi_types"], found["attribute_map"]
        return Model(
            name,
            {keys[attr]: tp for attr, tp in types.items()},
            frozenset(keys[attr] for attr in required if attr in keys),
        )

    def check(self, obj: Any) -> None:
        """Raise SchemaMismatch unless `obj` is a v1beta1 InferenceService as the SDK has it."""
        errors: list[str] = []
        if not isinstance(obj, dict):
            raise SchemaMismatch("the InferenceService is not a mapping")
        for key, want in (
            ("apiVersion", "serving.kserve.io/v1beta1"),
            ("kind", "InferenceService"),
        ):
            if obj.get(key) != want:
                errors.append(f"{key}: {obj.get(key)!r}, expected {want!r}")
        for key in ("metadata", "spec"):
            if key not in obj:
                errors.append(f"{key}: missing")
        for key in obj:
            if key not in ("apiVersion", "kind", "metadata", "spec"):
                errors.append(f"{key}: not a field of a rendered InferenceService")
        if "metadata" in obj:
            self._walk(obj["metadata"], "V1ObjectMeta", "metadata", errors)
        if "spec" in obj:
            self._walk(obj["spec"], "V1beta1InferenceServiceSpec", "spec", errors)
        if errors:
            raise SchemaMismatch("\n".join(errors))

    def _walk(self, value: Any, tp: str, path: str, errors: list[str]) -> None:
        if value is None:
            errors.append(f"{path}: null")
            return
        if tp.startswith("list[") and tp.endswith("]"):
            if not isinstance(value, list):
                errors.append(f"{path}: {_kind(value)}, expected a list")
                return
            for i, item in enumerate(value):
                self._walk(item, tp[5:-1], f"{path}[{i}]", errors)
            return
        if tp.startswith("dict(str, ") and tp.endswith(")"):
            if not isinstance(value, dict):
                errors.append(f"{path}: {_kind(value)}, expected a mapping")
                return
            for key, item in value.items():
                if not isinstance(key, str):
                    errors.append(f"{path}: key {key!r} is not a string")
                self._walk(item, tp[10:-1], f"{path}.{key}", errors)
            return
        if tp in SCALARS:
            wrong = _scalar_error(value, tp)
            if wrong:
                errors.append(f"{path}: {wrong}")
            return
        self._walk_model(value, tp, path, errors)

    def _walk_model(self, value: Any, tp: str, path: str, errors: list[str]) -> None:
        renamed = GO_PACKAGE_NAME.match(tp)
        model = self.model(tp) or (self.model("".join(renamed.groups())) if renamed else None)
        if model is None:
            errors.append(f"{path}: the SDK's type {tp} is defined in neither wheel; not checkable")
            return
        if not isinstance(value, dict):
            errors.append(f"{path}: {_kind(value)}, expected a mapping ({model.name})")
            return
        for key in sorted(model.required - value.keys()):
            errors.append(f"{path}.{key}: missing (required by {model.name})")
        for key, item in value.items():
            field = model.fields.get(key)
            if field is None:
                errors.append(f"{path}.{key}: not a field of {model.name}")
                continue
            if (model.name, key) in QUANTITY_FIELDS:
                field = {
                    "str": "ResourceQuantity",
                    "dict(str, str)": "dict(str, ResourceQuantity)",
                }[field]
            self._walk(item, field, f"{path}.{key}", errors)


def _refuses_none(fn: ast.FunctionDef) -> bool:
    """A generated setter with `raise ValueError("Invalid value for `x`, must not be `None`")`."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                if isinstance(arg, ast.Constant) and "must not be `None`" in str(arg.value):
                    return True
    return False


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _scalar_error(value: Any, tp: str) -> str | None:
    """What is wrong with `value` as the scalar type `tp` (None: nothing)."""
    if tp == "object":
        return None
    if tp in ("str", "datetime", "date"):
        return None if isinstance(value, str) else f"{_kind(value)}, expected a string"
    if tp == "bool":
        return None if isinstance(value, bool) else f"{_kind(value)}, expected a boolean"
    if tp == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{_kind(value)}, expected an integer"
    if tp == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{_kind(value)}, expected a number"
    # ResourceQuantity
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, str) and QUANTITY.match(value):
        return None
    return f"{_kind(value)}, expected a quantity (an integer, or a string like 500m or 1Gi)"
