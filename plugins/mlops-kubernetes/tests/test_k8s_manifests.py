"""What is rendered, checked strictly: the built-in kinds with kubernetes-validate (strict
schemas; a kind it has no schema for fails here, where its CLI only warns and exits 0),
the InferenceService against its CRD's openAPIV3Schema (where that file is provided; the
check that runs in CI, against KServe's SDK, is test_k8s_kserve_sdk.py), and golden files
reviewed by hand.
Regenerate the golden files with MLOPS_UPDATE_GOLDEN=1 and read the diff before committing."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml
from kserve_schema import validate_inference_service

from mlops_console.errors import ConfigError
from mlops_kubernetes import manifests as mf
from mlops_kubernetes.options import KubeOptions
from mlops_kubernetes.render import to_yaml, validate_builtin

GOLDEN = Path(__file__).parent / "golden"
V1 = mf.Release("v1-0123456789ab", 1, "a" * 64, "sklearn")
V2 = mf.Release("v2-ba9876543210", 2, "b" * 64, "sklearn")
ENV = {"MLOPS_ALLOWED_HOSTS": "churn,churn.default.svc", "MLOPS_MAX_ROWS": "100000"}
TOKENS = {"admin": "test-admin-token"}


def opts(**kw) -> KubeOptions:
    return KubeOptions.from_config(kw)


def check_golden(folder: str, files: dict[str, dict]) -> None:
    """Each object as YAML equals its golden file (written instead with MLOPS_UPDATE_GOLDEN=1)."""
    where = GOLDEN / folder
    if os.environ.get("MLOPS_UPDATE_GOLDEN"):
        where.mkdir(parents=True, exist_ok=True)
        for stale in where.glob("*.yaml"):
            stale.unlink()
        for name, obj in files.items():
            (where / name).write_text(to_yaml(obj))
    assert sorted(p.name for p in where.glob("*.yaml")) == sorted(files)
    for name, obj in files.items():
        assert to_yaml(obj) == (where / name).read_text(), f"{folder}/{name} differs from golden"


def test_plain_form_is_valid_and_matches_golden():
    files = mf.plain("churn", V1, opts(), ENV, TOKENS)
    assert list(files) == ["secret.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]
    for obj in files.values():
        validate_builtin(obj)
    check_golden("plain", files)
    pod = files["deployment.yaml"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/ping"
    sc = server["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    # the token only by reference in the pod, its value only in the Secret
    assert "test-admin-token" not in to_yaml(files["deployment.yaml"])
    token_env = [e for e in server["env"] if e["name"] == "MLOPS_ADMIN_TOKEN"]
    assert token_env == [
        {
            "name": "MLOPS_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "churn-tokens", "key": "admin-token"}},
        }
    ]
    data = files["secret.yaml"]["data"]["admin-token"]
    assert base64.b64decode(data).decode() == "test-admin-token"
    # the primary's count is the HPA's: a count in the Deployment would reset it at each apply
    assert "replicas" not in files["deployment.yaml"]["spec"]
    assert files["hpa.yaml"]["spec"]["minReplicas"] == 2


def test_plain_canary_is_a_second_deployment_with_pods_in_proportion():
    files = mf.plain("churn", V1, opts(max_replicas=8), ENV, TOKENS, canary=V2, percent=25)
    for obj in files.values():
        validate_builtin(obj)
    check_golden("plain-canary", files)
    canary = files["deployment-canary.yaml"]
    assert canary["metadata"]["name"] == "churn-canary"
    assert canary["spec"]["replicas"] == 1 and files["hpa.yaml"]["spec"]["minReplicas"] == 3
    # the Service selects both Deployments' pods; each Deployment only its own
    svc = files["service.yaml"]["spec"]["selector"]
    for dep in (files["deployment.yaml"], canary):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc.items() <= labels.items()
    assert files["deployment.yaml"]["spec"]["selector"] != canary["spec"]["selector"], (
        "overlapping Deployment selectors fight over pods"
    )


@pytest.mark.parametrize(
    "percent, replicas, max_replicas, split",
    [(25, 2, 5, (3, 1)), (50, 2, 5, (1, 1)), (10, 2, 10, (9, 1)), (33, 2, 5, (2, 1))],
)
def test_pod_split(percent, replicas, max_replicas, split):
    got = mf.pod_split(percent, opts(replicas=replicas, max_replicas=max_replicas))
    assert (got.primary, got.canary) == split


def test_a_canary_too_small_for_the_pods_allowed_is_refused_with_what_would_work():
    with pytest.raises(ConfigError) as err:
        mf.pod_split(5, opts(max_replicas=5))
    text = str(err.value)
    assert "needs about 20 pods" in text and "max_replicas" in text and "serverless" in text


def test_kserve_forms_are_valid_against_the_crd_and_match_golden():
    store = {"storage_uri": "s3://models/prod", "form": "kserve"}
    raw = mf.inference_service("churn", V1, opts(**store))
    onnx = mf.inference_service(
        "churn",
        mf.Release("v1-0123456789ab", 1, "a" * 64, "onnx"),
        opts(form="kserve", pvc="models", pvc_path="serving/churn"),
    )
    canary = mf.inference_service(
        "churn", V2, opts(kserve_mode="serverless", **store), canary_percent=20
    )
    for files in (raw, onnx, canary):
        validate_inference_service(files["inferenceservice.yaml"])
    check_golden("kserve-raw", raw)
    check_golden("kserve-onnx-pvc", {"inferenceservice.yaml": onnx["inferenceservice.yaml"]})
    check_golden("kserve-serverless-canary", canary)
    isvc = canary["inferenceservice.yaml"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert (
        isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/prod/churn/v2-ba9876543210"
    )
    model = onnx["inferenceservice.yaml"]["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "pvc://models/serving/churn/v1-0123456789ab"


def test_a_raw_mode_canary_is_refused():
    with pytest.raises(ConfigError, match="ignores canaryTrafficPercent"):
        mf.inference_service(
            "churn", V2, opts(form="kserve", storage_uri="s3://m"), canary_percent=20
        )


def test_the_crd_check_is_strict():
    """The schema check itself fails on what a cluster would refuse: an unknown field, a
    wrong type, a missing required field."""
    import jsonschema

    base = mf.inference_service("churn", V1, opts(form="kserve", storage_uri="s3://m"))
    good = base["inferenceservice.yaml"]
    for broken in (
        {**good, "spec": {"predictor": {**good["spec"]["predictor"], "canaryTraffic": 5}}},
        {**good, "spec": {"predictor": {**good["spec"]["predictor"], "minReplicas": "two"}}},
        {
            **good,
            "spec": {
                "predictor": {
                    **good["spec"]["predictor"],
                    "model": {**good["spec"]["predictor"]["model"], "modelFormat": {}},
                }
            },
        },
        {**good, "metadata": {**good["metadata"], "labels": {"version": 2}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_inference_service(broken)


def test_the_builtin_check_is_strict_and_knows_no_custom_kind():
    from mlops_console.deploy.base import DeployError

    dep = mf.deployment("churn", V1, opts(), ENV, ["admin"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(DeployError, match="not valid"):
        validate_builtin(dep)
    isvc = mf.inference_service("churn", V1, opts(form="kserve", storage_uri="s3://m"))
    with pytest.raises(DeployError, match="No schema"):
        validate_builtin(isvc["inferenceservice.yaml"])


def test_golden_files_parse_as_the_objects_kubectl_gets():
    for path in GOLDEN.rglob("*.yaml"):
        obj = yaml.safe_load(path.read_text())
        assert obj["metadata"]["namespace"] == "default"
        assert obj["metadata"]["labels"]["mlops-console/deployment"] == "churn"
