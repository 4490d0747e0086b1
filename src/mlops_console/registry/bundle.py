"""Model bundles: the unit every deploy target ships.

A bundle is `bundle.json` (name, version, signature, labels, file hashes, package
versions, lineage ids), the scikit-learn pipeline (`model.joblib`) and, when it converts
faithfully, `model.onnx`. Every file is hash-checked before it is loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_console.errors import ArtifactIntegrityError, MlopsError
from mlops_console.registry.signature import prepare_inputs

FORMAT = "mlops-bundle/1"


@dataclass
class BundleDraft:
    """What a training run produced, before the registry assigns a version."""

    task: str
    signature: dict[str, Any]
    files: dict[str, bytes]  # name -> content
    lineage: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    onnx_check: dict[str, Any] | None = None

    def manifest(self, name: str, version: int, hashes: dict[str, str]) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "name": name,
                "version": version,
                "task": self.task,
                "signature": self.signature,
                "labels": self.signature.get("labels"),
                "files": {
                    n: {"sha256": hashes[n], "size": len(self.files[n])} for n in sorted(self.files)
                },
                "runtimes": ["onnx", "sklearn"] if "model.onnx" in self.files else ["sklearn"],
                "onnx_check": self.onnx_check,
                "packages": self.packages,
                "lineage": self.lineage,
                "created_at": time.time(),
            },
            indent=2,
            sort_keys=True,
        ).encode()


def is_manifest(data: bytes) -> bool:
    return data[:1] == b"{" and b'"format": "mlops-bundle/' in data[:4096]


class LoadedBundle:
    """A bundle's model, ready to predict from raw frames; ONNX when present."""

    def __init__(
        self, manifest: dict[str, Any], files: dict[str, bytes], runtime: str | None = None
    ):
        self.manifest = manifest
        self.signature = manifest["signature"]
        self.task = manifest["task"]
        self.labels = manifest.get("labels")
        self._sk = None
        self._onnx = None
        self._files = files
        self.runtime = runtime or ("onnx" if "model.onnx" in files else "sklearn")
        if self.runtime == "onnx" and "model.onnx" not in files:
            raise MlopsError("This bundle has no ONNX model; use the sklearn runtime.")

    @property
    def sklearn_model(self):
        if self._sk is None:
            import joblib

            from mlops_console.codefiles import install

            install(self._files)  # workspace code the pickle refers to, from the bundle
            self._sk = joblib.load(io.BytesIO(self._files["model.joblib"]))
        return self._sk

    def _session(self):
        if self._onnx is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._onnx = ort.InferenceSession(
                self._files["model.onnx"], opts, providers=["CPUExecutionProvider"]
            )
        return self._onnx

    def _onnx_run(self, prepared):
        import numpy as np

        feed = {}
        for col in self.signature["inputs"]:
            v = prepared[col["name"]].to_numpy()
            feed[col["name"]] = (v.astype(np.float32) if v.dtype != object else v).reshape(-1, 1)
        return self._session().run(None, feed)

    def predict(self, frame):
        import numpy as np

        prepared = prepare_inputs(frame, self.signature)
        if self.runtime == "onnx":
            label = self._onnx_run(prepared)[0]
            return np.asarray(label).reshape(-1)
        return self.sklearn_model.predict(prepared)

    def predict_proba(self, frame):
        import numpy as np

        if self.task != "classification":
            raise MlopsError("predict_proba is only for classification models.")
        prepared = prepare_inputs(frame, self.signature)
        if self.runtime == "onnx":
            return np.asarray(self._onnx_run(prepared)[1], dtype=np.float64)
        return self.sklearn_model.predict_proba(prepared)


def load_bundle(store, digest: str, runtime: str | None = None) -> LoadedBundle:
    """Load a registered bundle from the artifact store; every file is hash-verified."""
    manifest = json.loads(store.get_bytes(digest))
    files = {name: store.get_bytes(meta["sha256"]) for name, meta in manifest["files"].items()}
    return LoadedBundle(manifest, files, runtime)


def export_bundle(store, digest: str, dest: Path, read_only: bool = False) -> Path:
    """Write a bundle to a folder (bundle.json + files), verified, for a deploy target.
    `read_only`: files 0400 and the folder 0500 once written (a deployment's copy)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(store.get_bytes(digest))
    for name, meta in manifest["files"].items():
        store.export(meta["sha256"], dest / name)
    store.export(digest, dest / "bundle.json")
    if read_only:
        for f in dest.iterdir():
            f.chmod(0o400)
        dest.chmod(0o500)
    return dest


def bundle_dir_matches(folder: Path, digest: str) -> bool:
    """Whether an exported folder is exactly the registered bundle: bundle.json hashes to
    the registry's digest and every file it lists to its own hash, with nothing else."""
    folder = Path(folder)
    try:
        raw = (folder / "bundle.json").read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            return False
        files = json.loads(raw)["files"]
        if {p.name for p in folder.iterdir()} != {*files, "bundle.json"}:
            return False
        return all(
            hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"]
            for name, meta in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_bundle_dir(
    folder: Path, runtime: str | None = None, digest: str | None = None
) -> LoadedBundle:
    """Load an exported bundle folder, refusing any file whose hash does not match.

    With `digest` (the registry's hash of the bundle, which is the sha256 of its
    `bundle.json`), the manifest itself is checked first, before anything is read from it:
    a folder whose files and manifest were both rewritten is refused.
    """
    folder = Path(folder)
    raw = (folder / "bundle.json").read_bytes()
    if digest is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != digest:
            raise ArtifactIntegrityError(
                f"{folder / 'bundle.json'} is not the bundle the registry vouches for "
                f"({actual[:12]} instead of {digest[:12]}); nothing was loaded. Deploy the "
                "version again to re-export it."
            )
    manifest = json.loads(raw)
    if manifest.get("format") != FORMAT:
        raise MlopsError(f"{folder} does not hold an {FORMAT} bundle.")
    files = {}
    for name, meta in manifest["files"].items():
        data = (folder / name).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != meta["sha256"]:
            raise ArtifactIntegrityError(
                f"{folder / name} does not match its hash in bundle.json ({actual[:12]} instead of "
                f"{meta['sha256'][:12]}); it was not loaded. Export the bundle again."
            )
        files[name] = data
    return LoadedBundle(manifest, files, runtime)
