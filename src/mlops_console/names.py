"""Names users give to things, checked in one place because each becomes a file name.

A dataset, model, deployment, pipeline or feature view name ends up as a folder or file
under the workspace (`.mlops/deployments/NAME`, `.mlops/lake/datasets/NAME`,
`pipelines/NAME.toml`, ...), so a name like `../../x`, `/tmp/x` or one with a trailing
newline must never get that far. Every check uses `re.fullmatch`: `re.match` with `$`
lets a trailing newline through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlops_console.errors import InvalidName, MlopsError


@dataclass(frozen=True)
class NameRule:
    what: str  # "Deployment name", as the message starts
    pattern: str
    allowed: str  # what is allowed, in the user's words


_SQL_NAME = r"[A-Za-z][A-Za-z0-9_]{0,62}"
_FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

RULES = {
    "dataset": NameRule(
        "Dataset name",
        _SQL_NAME,
        "start with a letter, then letters, digits or '_', at most 63 characters (it is "
        "also the table name in feature SQL)",
    ),
    "feature view": NameRule(
        "Feature view name",
        _SQL_NAME,
        "start with a letter, then letters, digits or '_', at most 63 characters",
    ),
    "model": NameRule(
        "Model name",
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
        "use letters, digits, '_', '-' or '.', starting with a letter or digit, at most "
        "128 characters",
    ),
    "alias": NameRule(
        "Alias",
        r"(?![0-9]+\Z)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
        "use a name like 'champion': letters, digits, '_', '-' or '.', starting with a "
        "letter or digit, not only digits",
    ),
    "deployment": NameRule(
        "Deployment name",
        r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
        "use letters, digits, '_', '-' or '.', starting with a letter or digit, at most "
        "128 characters (no '/' and no path)",
    ),
    "pipeline": NameRule(
        "Pipeline name",
        rf"(?!.*\.toml\Z){_FILE_NAME}",
        "give the name of a file in pipelines/ without '.toml' (letters, digits, '_', '-' "
        "or '.', starting with a letter or digit, at most 64 characters), not a path",
    ),
}


def check_name(kind: str, name: object) -> str:
    """Return `name` if it is an allowed `kind` name, else raise InvalidName saying why."""
    rule = RULES[kind]
    if isinstance(name, str) and re.fullmatch(rule.pattern, name):
        return name
    raise InvalidName(f"{rule.what} {name!r} is not allowed: {rule.allowed}.")


def is_name(kind: str, name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(RULES[kind].pattern, name) is not None


def inside(base: Path, *parts: str | Path) -> Path:
    """`base / parts`, refused unless it resolves (symlinks too) to a path inside `base`."""
    root = Path(base).resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root):
        raise MlopsError(f"{Path(*parts)} leads outside {root}; give a name or a path inside it.")
    return path
