"""A data contract's file, `contracts/NAME.toml`: read and checked, or written out
with comments a user can edit (what `mlops data ingest` infers from a first version).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlops_console.config import load_toml, parse
from mlops_console.data.contract import Contract


def load(path: Path) -> Contract:
    return parse(Contract, load_toml(path), path)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, int | float):
        return repr(round(v, 10))
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return (
        '"'
        + "".join(
            _ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c) for c in text
        )
        + '"'
    )


def _key(name: str) -> str:
    """A bare key where TOML allows one (ASCII letters, digits, _ and -), else quoted."""
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def dumps(contract: Contract, note: str = "") -> str:
    out = [
        f"# Data contract for dataset {contract.dataset!r}. {note}".rstrip(),
        "# A version that breaks a rule is quarantined; edit the rules to fit your data.",
        f"dataset = {_toml_value(contract.dataset)}",
        f"allow_extra_columns = {_toml_value(contract.allow_extra_columns)}",
        "",
        "[rows]",
    ]
    if contract.rows.min is not None:
        out.append(f"min = {contract.rows.min}")
    out.append(
        f"max = {contract.rows.max}" if contract.rows.max is not None else "# max = 10000000"
    )
    out += ["", "[keys]", f"unique = {_toml_value(contract.keys.unique)}", "", "[freshness]"]
    if contract.freshness.column:
        out.append(f"column = {_toml_value(contract.freshness.column)}")
    out.append(
        f"max_age_days = {contract.freshness.max_age_days!r}"
        if contract.freshness.max_age_days
        else "# max_age_days = 7   # the newest timestamp may be at most this old"
    )
    for name, rule in contract.columns.items():
        out += [
            "",
            f"[columns.{_key(name)}]",
            f"type = {_toml_value(rule.type)}",
            f"nullable = {_toml_value(rule.nullable)}",
        ]
        if rule.min is not None:
            out.append(f"min = {_toml_value(rule.min)}")
        if rule.max is not None:
            out.append(f"max = {_toml_value(rule.max)}")
        if rule.categories is not None:
            out.append(f"categories = {_toml_value(rule.categories)}")
    return "\n".join(out) + "\n"
