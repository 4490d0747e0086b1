"""A loaded model version, predicting from typed column arrays."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlops_console.registry.bundle import LoadedBundle, load_bundle_dir


class ServedModel:
    def __init__(self, bundle: LoadedBundle, source: str = ""):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.name = self.manifest.get("name", "model")
        self.version = int(self.manifest.get("version") or 0)
        self.signature = bundle.signature
        self.task = bundle.task
        self.labels = bundle.labels
        self.runtime = bundle.runtime
        self.source = source
        self.loaded_at = time.time()
        self.bundle_digest: str | None = None  # the registry's hash, when it was checked
        self.digest = hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()
        self._numeric = [c["name"] for c in self.signature["inputs"] if c["type"] != "string"]
        if self.runtime == "onnx":
            self._session = bundle._session()
        else:
            self._sk = bundle.sklearn_model
        n = 1
        self.predict(
            {
                c["name"]: (np.zeros(n) if c["type"] != "string" else np.array([""], dtype=object))
                for c in self.signature["inputs"]
            },
            n,
        )  # warm up before taking traffic

    @classmethod
    def from_folder(
        cls, folder: Path | str, runtime: str | None = None, digest: str | None = None
    ) -> ServedModel:
        model = cls(load_bundle_dir(Path(folder), runtime, digest), str(folder))
        model.bundle_digest = digest
        return model

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def predict(self, arrays: dict[str, np.ndarray], n: int) -> dict[str, Any]:
        """{'predict': labels or values, 'predict_proba': class probabilities (classifiers)}."""
        if self.runtime == "onnx":
            feed = {}
            for col in self.signature["inputs"]:
                a = arrays[col["name"]]
                feed[col["name"]] = (
                    a.astype(np.float32) if col["type"] != "string" else a
                ).reshape(-1, 1)
            outs = self._session.run(None, feed)
            if self.task == "classification":
                return {
                    "predict": np.asarray(outs[0]).reshape(-1),
                    "predict_proba": np.asarray(outs[1]),
                }
            return {"predict": np.asarray(outs[0], dtype=np.float64).reshape(-1)}
        import pandas as pd

        frame = pd.DataFrame({c["name"]: arrays[c["name"]] for c in self.signature["inputs"]})
        if self.task == "classification":
            proba = self._sk.predict_proba(frame)
            return {"predict": self._sk.classes_[proba.argmax(axis=1)], "predict_proba": proba}
        return {"predict": np.asarray(self._sk.predict(frame), dtype=np.float64)}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "task": self.task,
            "labels": self.labels,
            "digest": self.digest,
            "bundle_digest": self.bundle_digest,
            "loaded_at": self.loaded_at,
            "inputs": self.signature["inputs"],
            "outputs": self.signature.get("outputs", []),
        }
