"""Writing the manifests: each object checked first (the built-in kinds against
Kubernetes' own schemas, strictly: an unknown field is an error), then written owner-only
(the Secret holds the tokens), with files of an earlier render that no longer belong
removed, so `kubectl apply -f DIR` applies exactly what this deployment is."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mlops_console.deploy.base import DeployError
from mlops_kubernetes.options import KubeOptions

# every file a render can write; others in the folder are the user's and stay
KNOWN = (
    "secret.yaml",
    "deployment.yaml",
    "deployment-canary.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "inferenceservice.yaml",
)
CUSTOM_KINDS = {"InferenceService"}  # no schema in kubernetes-validate: see tests/


def validate_builtin(obj: dict[str, Any]) -> None:
    """Check a built-in kind against the newest Kubernetes schema kubernetes-validate
    ships, strictly; a kind it has no schema for is an error here, not a warning."""
    import kubernetes_validate.utils as kv

    version = kv.latest_version()
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise DeployError(
            f"The rendered {obj['kind']} {obj['metadata']['name']} is not valid for Kubernetes "
            f"{exc.version} at {where or 'the top'}: {exc.message}"
        ) from None
    except kv.SchemaNotFoundError as exc:
        raise DeployError(f"No schema to check the rendered {obj['kind']}: {exc.message}") from None


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # an existing temp file keeps its mode through O_CREAT
    os.replace(tmp, path)


def render(
    folder: Path,
    name: str,
    files: dict[str, dict[str, Any]],
    bundles: dict[str, Path],
    opts: KubeOptions,
) -> list[Path]:
    """Write `files` ({file name: object}) into `folder`; with `bundles` (the KServe form)
    also the model files KServe reads, under model/NAME/BUNDLE/ (copy that tree to
    -o storage_uri, or onto the PVC). Returns the manifests written, in apply order."""
    for obj in files.values():
        if obj["kind"] not in CUSTOM_KINDS:
            validate_builtin(obj)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in KNOWN:
        if stale not in files:
            (folder / stale).unlink(missing_ok=True)
    written = []
    for file_name, obj in files.items():
        path = folder / file_name
        _write(
            path,
            f"# mlops-console: deployment {name} ({obj['kind']}); apply with kubectl apply -f\n"
            + to_yaml(obj),
        )
        written.append(path)
    for bundle_name, bundle in bundles.items():
        _model_files(folder / "model" / name / bundle_name, bundle, name)
    return written


def _model_files(dest: Path, bundle: Path, name: str) -> None:
    """What KServe's servers read: model.joblib for the sklearn server; a Triton model
    repository (NAME/1/model.onnx) for onnx."""
    if dest.exists():
        return  # a bundle folder's name carries its hash: the same name is the same files
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700, parents=True)
    if (bundle / "model.joblib").exists():
        shutil.copyfile(bundle / "model.joblib", tmp / "model.joblib")
    if (bundle / "model.onnx").exists():
        (tmp / name / "1").mkdir(parents=True)
        shutil.copyfile(bundle / "model.onnx", tmp / name / "1" / "model.onnx")
    shutil.copyfile(bundle / "bundle.json", tmp / "bundle.json")
    os.replace(tmp, dest)
