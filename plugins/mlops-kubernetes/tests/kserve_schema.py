"""The InferenceService's schema: the openAPIV3Schema of KServe's CRD
(config/crd/full/serving.kserve.io_inferenceservices.yaml, version v1beta1), as a JSON file
{"source", "commit", "openAPIV3Schema"}. It is not in this repository: files taken from
other projects' repositories are kept in the project's shared/ folder, beside the clone
(`../shared/kserve/inferenceservice-v1beta1.schema.json`), or named by
MLOPS_KSERVE_ISVC_SCHEMA. Where neither exists the tests that need it skip, saying so."""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

NAME = "inferenceservice-v1beta1.schema.json"


def schema_path() -> Path | None:
    named = os.environ.get("MLOPS_KSERVE_ISVC_SCHEMA")
    if named:
        return Path(named)
    repo = Path(__file__).resolve().parents[3]
    for shared in (repo.parent / "shared", repo / "shared"):
        if (shared / "kserve" / NAME).is_file():
            return shared / "kserve" / NAME
    return None


def _strict(node: Any) -> Any:
    """The API server's strict field validation (kubectl apply --validate=strict): an object
    schema with properties takes no other field unless it says it keeps unknown ones."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _validator():
    import jsonschema

    path = schema_path()
    if path is None:
        return None
    doc = json.loads(path.read_text())
    schema = _strict(copy.deepcopy(doc["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


@cache
def _object_meta():
    """Kubernetes' ObjectMeta, strict, from kubernetes-validate's schemas: the CRD's own
    schema says only `metadata: {type: object}`, the API server checks the rest."""
    import jsonschema
    import kubernetes_validate.utils as kv
    from referencing import Registry, Resource

    version = kv.latest_version()
    defs = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    registry = Resource.from_contents(defs) @ Registry()
    ref = f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)


def validate_inference_service(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `obj` fits the CRD (and its metadata
    Kubernetes' ObjectMeta); skip without the CRD's schema."""
    v = _validator()
    if v is None:
        pytest.skip(
            f"KServe's InferenceService schema ({NAME}) is not in shared/kserve/ beside the "
            "repository, nor named by MLOPS_KSERVE_ISVC_SCHEMA"
        )
    assert obj["apiVersion"] == "serving.kserve.io/v1beta1" and obj["kind"] == "InferenceService"
    v.validate(obj)
    _object_meta().validate(obj["metadata"])
