"""The InferenceService checked in CI against KServe's published SDK (kserve 0.21.0 and the
kubernetes 35.0.0 client, wheels from PyPI, read and never imported; see kserve_sdk.py):
every form the target renders fits, and what a cluster would refuse does not."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import yaml
from kserve_sdk import QUANTITY_FIELDS, PypiUnreachable, SchemaMismatch, SdkModels, download_wheels

from mlops_kubernetes import manifests as mf
from mlops_kubernetes.options import KubeOptions

GOLDEN = Path(__file__).parent / "golden"
V1 = mf.Release("v1-0123456789ab", 1, "a" * 64, "sklearn")
V2 = mf.Release("v2-ba9876543210", 2, "b" * 64, "sklearn")
ONNX = mf.Release("v1-0123456789ab", 1, "a" * 64, "onnx")
STORE = {"form": "kserve", "storage_uri": "s3://models/prod"}


@pytest.fixture(scope="session")
def sdk(request):
    """The SDK's classes from the pinned wheels, downloaded once into pytest's cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = Path(cache.mkdir("kserve-sdk")) if cache else Path(sys.prefix) / "kserve-sdk"
    try:
        wheels = download_wheels(folder)
    except PypiUnreachable as err:
        pytest.skip(f"KServe's SDK wheels are not cached and PyPI is out of reach ({err})")
    models = SdkModels(wheels)
    yield models
    models.close()


def isvc(release: mf.Release = V1, canary: float | None = None, **options) -> dict:
    files = mf.inference_service("churn", release, KubeOptions.from_config(options), canary)
    return files["inferenceservice.yaml"]


RENDERED = {
    "sklearn-raw-s3": lambda: isvc(**STORE),
    "onnx-raw-pvc": lambda: isvc(ONNX, form="kserve", pvc="models", pvc_path="serving/churn"),
    "sklearn-serverless-canary": lambda: isvc(V2, 20, kserve_mode="serverless", **STORE),
    "serverless-named-runtime": lambda: isvc(
        kserve_mode="serverless", kserve_runtime="sklearn-1-6", namespace="ml", **STORE
    ),
    "other-resources": lambda: isvc(cpu="2", cpu_limit="4", memory="1Gi", **STORE),
}


@pytest.mark.parametrize("form", sorted(RENDERED))
def test_every_rendered_form_fits_the_sdk(sdk, form):
    sdk.check(RENDERED[form]())


def test_every_golden_inference_service_fits_the_sdk(sdk):
    goldens = sorted(GOLDEN.glob("kserve-*/inferenceservice.yaml"))
    assert len(goldens) >= 3, "the golden kserve forms are gone"
    for path in goldens:
        sdk.check(yaml.safe_load(path.read_text()))


def _broken(change):
    obj = copy.deepcopy(isvc(V2, 20, kserve_mode="serverless", **STORE))
    change(obj)
    return obj


def _predictor(obj):
    return obj["spec"]["predictor"]


def _misspell_canary(obj):
    _predictor(obj)["canaryTraficPercent"] = _predictor(obj).pop("canaryTrafficPercent")


BROKEN = {
    "misspelt canaryTraficPercent": (
        _misspell_canary,
        "predictor.canaryTraficPercent: not a field",
    ),
    "unknown predictor field": (
        lambda o: _predictor(o).update(replicas=3),
        "spec.predictor.replicas: not a field of V1beta1PredictorSpec",
    ),
    "unknown field deep in a k8s type": (
        lambda o: _predictor(o)["model"]["securityContext"].update(runAsRoot=False),
        "securityContext.runAsRoot: not a field of V1SecurityContext",
    ),
    "minReplicas a string": (
        lambda o: _predictor(o).update(minReplicas="two"),
        "minReplicas: str 'two', expected an integer",
    ),
    "canary percent a float": (
        lambda o: _predictor(o).update(canaryTrafficPercent=20.5),
        "expected an integer",
    ),
    "a boolean as a string": (
        lambda o: _predictor(o).update(automountServiceAccountToken="false"),
        "expected a boolean",
    ),
    "a label value an integer": (
        lambda o: o["metadata"]["labels"].update(version=2),
        "metadata.labels.version: int 2, expected a string",
    ),
    # the SDK requires modelFormat, but not its name (the CRD does: test_the_crd_check_is_strict)
    "a model without modelFormat": (
        lambda o: _predictor(o)["model"].pop("modelFormat"),
        "model.modelFormat: missing (required by V1beta1ModelSpec)",
    ),
    "a quantity with a space": (
        lambda o: _predictor(o)["model"]["resources"]["limits"].update(memory="1 Gi"),
        "limits.memory: str '1 Gi', expected a quantity",
    ),
    "a quantity a boolean": (
        lambda o: _predictor(o)["model"]["resources"]["requests"].update(cpu=True),
        "requests.cpu: bool True, expected a quantity",
    ),
    "capabilities.drop not a list": (
        lambda o: _predictor(o)["model"]["securityContext"]["capabilities"].update(drop="ALL"),
        "capabilities.drop: str 'ALL', expected a list",
    ),
    "a container without a name": (
        lambda o: _predictor(o).update(containers=[{"image": "x"}]),
        "containers[0].name: missing (required by V1Container)",
    ),
    "a status written by hand": (lambda o: o.update(status={}), "status: not a field"),
    "the wrong apiVersion": (
        lambda o: o.update(apiVersion="serving.kserve.io/v1alpha1"),
        "apiVersion: 'serving.kserve.io/v1alpha1', expected",
    ),
    "no spec": (lambda o: o.pop("spec"), "spec: missing"),
    "a null value": (lambda o: _predictor(o).update(maxReplicas=None), "maxReplicas: null"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_sdk_check_refuses_what_a_cluster_would(sdk, case):
    change, message = BROKEN[case]
    with pytest.raises(SchemaMismatch, match=_literal(message)):
        sdk.check(_broken(change))


def test_the_sdk_check_walks_kubernetes_types_it_does_not_render(sdk):
    """A predictor with a custom container passes through V1Container, V1EnvVar and
    V1EnvVarSource (and an integer quantity is one); a misspelt key three levels down is
    still found."""
    env = [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    good = _broken(
        lambda o: _predictor(o).update(
            containers=[{"name": "kserve-container", "image": "x:1", "env": env}],
            volumes=[{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            resources={"limits": {"cpu": 2, "memory": "1.5Gi"}},
            deploymentStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
        )
    )
    sdk.check(good)
    env[0]["valueFrom"]["secretKeyRef"]["keyy"] = env[0]["valueFrom"]["secretKeyRef"].pop("key")
    with pytest.raises(SchemaMismatch) as err:
        sdk.check(good)
    assert "secretKeyRef.keyy: not a field of V1SecretKeySelector" in str(err.value)
    assert "secretKeyRef.key: missing" in str(err.value)


def test_the_quantity_fields_are_strings_in_the_client(sdk):
    """The quantity override names fields the client has, typed as strings (else it would
    silently check nothing)."""
    for cls, key in sorted(QUANTITY_FIELDS):
        model = sdk.model(cls)
        assert model is not None, cls
        assert model.fields.get(key) in ("str", "dict(str, str)"), (cls, key)


def _literal(text: str) -> str:
    return re.escape(text)
