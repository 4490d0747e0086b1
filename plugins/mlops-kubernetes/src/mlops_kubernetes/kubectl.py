"""kubectl, the user's own: found on PATH, with the context it has (or `-o context`).
No arguments ever carry a token: Secrets travel in files (`kubectl apply -f`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mlops_console.deploy.base import DeployError


class Kubectl:
    def __init__(self, context: str | None, namespace: str):
        self.binary = shutil.which("kubectl")
        self.context = context
        self.namespace = namespace
        self._why: str | None = None

    def why_not(self) -> str | None:
        """None when kubectl can reach a cluster here; else why it cannot, in a few words."""
        if self.binary is None:
            return "no kubectl on PATH"
        if self.context is None:
            r = subprocess.run(
                [self.binary, "config", "current-context"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if r.returncode != 0 or not r.stdout.strip():
                return "kubectl has no current context; set one with kubectl config use-context NAME or -o context=NAME"
            self.context = r.stdout.strip()
        return None

    def _base(self) -> list[str]:
        assert self.binary is not None
        return [self.binary, "--context", self.context or "", "--namespace", self.namespace]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        cmd = [*self._base(), *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"kubectl {args[0]} did not finish within {timeout:g} s.") from None
        if check and r.returncode != 0:
            raise DeployError(
                f"kubectl {' '.join(args[:2])} failed: {(r.stderr or r.stdout).strip()[-600:]}"
            )
        return r

    def apply(self, files: list[Path]) -> str:
        args = ["apply"]
        for f in files:
            args += ["-f", str(f)]
        return self.run(*args).stdout

    def get_json(self, kind: str, name: str) -> dict[str, Any] | None:
        r = self.run("get", kind, name, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise DeployError(f"kubectl get {kind} {name} failed: {r.stderr.strip()[-400:]}")
        return json.loads(r.stdout)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        r = self.run("get", "pods", "-l", selector, "-o", "json")
        return json.loads(r.stdout).get("items", [])
