"""Workspace code a pipeline names (`[model] estimator = "module:function"`), carried in the
model bundle and imported from there.

A pickle of a model built by workspace code refers to that code by module name. Putting
the workspace on `sys.path` to find it would let any `numpy.py` a cloned workspace carries
shadow a library, and would run whatever the file holds now rather than what was trained.
So the module's source goes into the bundle (as `code.MODULE.py`, hash-checked like every
bundle file), and a finder placed first on `sys.meta_path` answers for those module names
only, from those bytes. Everything else imports as usual.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

PREFIX = "code."
SUFFIX = ".py"


class CodeError(ValueError):
    """Workspace code that cannot be carried in a bundle."""


def bundle_file(module: str) -> str:
    return f"{PREFIX}{module}{SUFFIX}"


def module_of(filename: str) -> str | None:
    if filename.startswith(PREFIX) and filename.endswith(SUFFIX):
        return filename[len(PREFIX) : -len(SUFFIX)]
    return None


def collect(estimator: str, root: Path) -> dict[str, bytes]:
    """The bundle files for the workspace module an estimator path names (none for an
    installed import path)."""
    if ":" not in estimator:
        return {}
    module = estimator.split(":", 1)[0]
    if not module.isidentifier():
        raise CodeError(f"{module!r} is not a module name; use 'module:function'.")
    path = Path(root) / f"{module}.py"
    if not path.is_file():
        raise CodeError(
            f"[model].estimator {estimator!r} needs {module}.py at the workspace root (a single "
            "file; packages are not carried into model bundles)."
        )
    return {bundle_file(module): path.read_bytes()}


class _Loader(importlib.abc.Loader):
    def __init__(self, source: bytes, origin: str):
        self.source, self.origin = source, origin

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(compile(self.source, self.origin, "exec"), module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.sources: dict[str, tuple[bytes, str]] = {}

    def find_spec(self, fullname, path=None, target=None):
        found = self.sources.get(fullname)
        if found is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(*found), origin=found[1])


_FINDER = _Finder()


def install(files: dict[str, bytes], where: str = "bundle") -> list[str]:
    """Make the code files among a bundle's (already verified) files importable."""
    names = []
    for filename, data in files.items():
        module = module_of(filename)
        if module is None:
            continue
        _FINDER.sources.setdefault(module, (data, f"<{where}>/{module}.py"))
        names.append(module)
    if names and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return names
