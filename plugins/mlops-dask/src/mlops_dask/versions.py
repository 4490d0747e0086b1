"""Package versions here and on the workers, and the skew that refuses a search.

A candidate is a pickled scikit-learn pipeline and its score comes back as numbers: the
workers must unpickle what this machine pickles and compute what it would compute, so
scikit-learn, numpy and joblib must be the same versions, and Python the same minor.
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any

# Must match exactly between this machine and every worker.
STRICT = ("python", "scikit-learn", "numpy", "joblib")
# Must be installed on the workers (the pipeline and its scorer import them).
NEEDED = ("scipy", "pandas", "mlops-console")


def local_versions() -> dict[str, str | None]:
    """{package: version or None} for the packages a search depends on, in this process."""
    return gather_versions()


def gather_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": "{}.{}".format(*sys.version_info[:2])}
    for name in STRICT[1:] + NEEDED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def worker_versions(client) -> dict[str, dict[str, Any]]:
    """{worker address: versions} gathered by running a function on every worker."""

    # defined here so that cloudpickle sends it by value: the workers need not have this
    # plugin installed to answer
    def versions() -> dict[str, str | None]:
        import sys as _sys
        from importlib import metadata as _md

        found: dict[str, str | None] = {"python": "{}.{}".format(*_sys.version_info[:2])}
        for name in ("scikit-learn", "numpy", "joblib", "scipy", "pandas", "mlops-console"):
            try:
                found[name] = _md.version(name)
            except _md.PackageNotFoundError:
                found[name] = None
        return found

    return client.run(versions)


def version_skew(
    local: dict[str, str | None], workers: dict[str, dict[str, str | None]]
) -> list[str]:
    """One line per difference that makes a worker unfit for this machine's search."""
    problems = []
    for address, theirs in sorted(workers.items()):
        for name in STRICT:
            if theirs.get(name) != local.get(name):
                problems.append(
                    f"{address} has {name} {theirs.get(name) or '(not installed)'}, "
                    f"this machine {local.get(name) or '(not installed)'}"
                )
        for name in NEEDED:
            if theirs.get(name) is None:
                problems.append(f"{address} does not have {name} installed")
    return problems
