"""Before anything is written or applied: will the target runtime load this bundle?

A scikit-learn pipeline is a pickle: it loads reliably only with the scikit-learn it was
made with, and joblib cannot read what a newer joblib wrote (a joblib/scikit-learn skew
is what breaks KServe's sklearn server, kserve #2818). So the runtime's declared versions
are compared with the ones the bundle recorded, and the model is then loaded here, with
warnings about versions turned into refusals."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mlops_console.deploy.base import DeployRefused
from mlops_kubernetes.options import KubeOptions

# scikit-learn and joblib as KServe's sklearn server image of each release pins them
# (python/sklearnserver/uv.lock, or poetry.lock before 0.16, in the kserve repository)
KSERVE_SKLEARN: dict[str, dict[str, str]] = {
    "0.13": {"scikit-learn": "1.3.2", "joblib": "1.3.2"},
    "0.14": {"scikit-learn": "1.5.1", "joblib": "1.4.2"},
    "0.15": {"scikit-learn": "1.5.1", "joblib": "1.4.2"},
    "0.16": {"scikit-learn": "1.5.2", "joblib": "1.4.2"},
    "0.17": {"scikit-learn": "1.5.2", "joblib": "1.4.2"},
    "0.18": {"scikit-learn": "1.5.2", "joblib": "1.4.2"},
    "0.19": {"scikit-learn": "1.5.2", "joblib": "1.5.3"},
    "0.20": {"scikit-learn": "1.5.2", "joblib": "1.5.3"},
}


@dataclass(frozen=True)
class Preflight:
    runtime: str
    where: str  # which runtime: "the serving image (this environment's pins)", "KServe 0.20's sklearn server"
    versions: dict[str, str]  # what the runtime has
    recorded: dict[str, str]  # what the bundle recorded

    def summary(self) -> str:
        have = ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())) or "no pickle"
        return f"{self.runtime} on {self.where} ({have}): loads"


def _here() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("scikit-learn", "joblib")}


def runtime_versions(opts: KubeOptions, runtime: str) -> tuple[str, dict[str, str]]:
    """Which runtime serves the model and the scikit-learn/joblib it declares."""
    declared = {
        k: v
        for k, v in (("scikit-learn", opts.runtime_sklearn), ("joblib", opts.runtime_joblib))
        if v
    }
    if runtime == "onnx":
        return ("Triton (onnx)" if opts.form == "kserve" else "the serving image (onnx)"), {}
    if opts.form == "plain":
        # the image `mlops deploy --target docker` builds pins this environment's versions
        # (mlops_console.deploy.docker.wheelhouse); -o runtime_* describes another image
        where = "the serving image" + (" (declared with -o runtime_*)" if declared else "")
        return where, {**_here(), **declared}
    if opts.kserve_runtime and len(declared) < 2:
        raise DeployRefused(
            f"-o kserve_runtime={opts.kserve_runtime} names a custom ServingRuntime whose "
            "versions are unknown here; declare them with -o runtime_sklearn=X.Y.Z -o "
            "runtime_joblib=X.Y.Z so the bundle can be checked against them."
        )
    if len(declared) == 2:
        return f"the ServingRuntime {opts.kserve_runtime or '(KServe picks)'}", declared
    pins = KSERVE_SKLEARN.get(".".join(opts.kserve_version.split(".")[:2]))
    if pins is None:
        raise DeployRefused(
            f"The scikit-learn and joblib of KServe {opts.kserve_version}'s sklearn server are "
            f"not known here (known: {', '.join(KSERVE_SKLEARN)}); pass -o kserve_version "
            "with one of those or declare -o runtime_sklearn=X.Y.Z -o runtime_joblib=X.Y.Z."
        )
    return f"KServe {opts.kserve_version}'s sklearn server", {**pins, **declared}


def _minor(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check(bundle: Path, runtime: str, opts: KubeOptions, digest: str | None) -> Preflight:
    """Refuse (DeployRefused, with the reason and what to do) a bundle the runtime would
    not load; else load it here, as the runtime would, and return what was checked."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    recorded = {
        k: v for k, v in (manifest.get("packages") or {}).items() if k in ("scikit-learn", "joblib")
    }
    where, versions = runtime_versions(opts, runtime)
    if runtime == "sklearn":
        skew = []
        sk_b, sk_r = recorded.get("scikit-learn"), versions.get("scikit-learn")
        if sk_b and sk_r and sk_b != sk_r:
            skew.append(f"scikit-learn {sk_b} made it and {where} has {sk_r}")
        jl_b, jl_r = recorded.get("joblib"), versions.get("joblib")
        if jl_b and jl_r and (_minor(jl_r) < _minor(jl_b) or _minor(jl_r)[0] != _minor(jl_b)[0]):
            skew.append(f"joblib {jl_b} wrote it and {where} has {jl_r}, which cannot read it")
        if skew:
            fixes = (
                ["serve its ONNX model (--runtime onnx)"]
                if (bundle / "model.onnx").exists()
                else []
            )
            fixes += [
                "retrain with the runtime's versions",
                "use a runtime image with the bundle's versions and declare them with "
                "-o runtime_sklearn=X.Y.Z -o runtime_joblib=X.Y.Z",
            ]
            fix = ", ".join(fixes[:-1]) + " or " + fixes[-1]
            raise DeployRefused(
                f"Preflight refused {manifest.get('name')} v{manifest.get('version')}: "
                f"{'; '.join(skew)} (a pickled pipeline loads reliably only with the versions "
                f"that made it, kserve #2818). {fix[0].upper()}{fix[1:]}."
            )
    _load(bundle, runtime, digest)
    return Preflight(runtime, where, versions, recorded)


def _load(bundle: Path, runtime: str, digest: str | None) -> None:
    """Load the model as the runtime will: every file hash-checked against the registry's
    digest, the pipeline unpickled (or the ONNX graph opened, as Triton will), with
    scikit-learn's version warnings refused. It runs with this environment's versions,
    which the comparison above has already held against the runtime's."""
    from mlops_console.errors import MlopsError
    from mlops_console.registry.bundle import load_bundle_dir

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=UserWarning)  # InconsistentVersionWarning
            loaded = load_bundle_dir(bundle, runtime, digest)
            if runtime == "sklearn":
                loaded.sklearn_model  # noqa: B018 - the unpickling is the check
            else:
                loaded._session()  # the ONNX graph, opened by onnxruntime
    except MlopsError as exc:
        raise DeployRefused(f"Preflight refused the bundle at {bundle}: {exc}") from None
    except Exception as exc:
        raise DeployRefused(
            f"Preflight: the model does not load with {runtime} "
            f"({type(exc).__name__}: {str(exc)[:300]}); it would fail the same way in the cluster."
        ) from None
