"""The run search language, compiled to SQL.

    metrics.auc > 0.8 and params.model = 'rf' and tags.team != "x" and status = 'FINISHED'

Clauses are joined by `and`. Left side: `metrics.K`, `params.K`, `tags.K` or an attribute
(`status`, `name`, `run_id`, `start_time`, `end_time`, `experiment`). Operators:
= == != < <= > >= like ilike. Values: numbers or quoted strings. Keys with unusual
characters can be back-quoted: metrics.`val loss`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlops_console.errors import MlopsError


class QueryError(MlopsError):
    pass


ATTRIBUTES = {
    "status": "r.status",
    "name": "r.name",
    "run_id": "r.id",
    "id": "r.id",
    "start_time": "r.start_time",
    "end_time": "r.end_time",
    "experiment": "e.name",
    "user": "r.user",
}
OPS = {"=": "=", "==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ident>(?:metrics|params|tags)\.(?:`[^`]+`|[\w.\-/]+)|[A-Za-z_]\w*)
      | (?P<op><=|>=|==|!=|=|<|>)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    )""",
    re.VERBOSE,
)


@dataclass
class Field:
    kind: str  # metrics, params, tags, attr
    key: str


def parse_field(text: str) -> Field:
    text = text.strip()
    for kind in ("metrics", "params", "tags"):
        if text.startswith(kind + "."):
            key = text[len(kind) + 1 :]
            if key.startswith("`") and key.endswith("`"):
                key = key[1:-1]
            return Field(kind, key)
    if text in ATTRIBUTES:
        return Field("attr", text)
    raise QueryError(
        f"Unknown field {text!r}: use metrics.NAME, params.NAME, tags.NAME or one of "
        f"{', '.join(sorted(ATTRIBUTES))}."
    )


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"Cannot read the filter at {text[pos:]!r}.")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def compile_filter(text: str | None) -> tuple[str, list[Any]]:
    """Return an SQL boolean expression over `run r JOIN experiment e` and its params."""
    if not text or not text.strip():
        return "1", []
    toks = _tokens(text)
    clauses: list[str] = []
    params: list[Any] = []
    i = 0
    while True:
        if i + 3 > len(toks):
            raise QueryError(f"Incomplete filter {text!r}: expected FIELD OP VALUE.")
        (k1, v1), (k2, v2), (k3, v3) = toks[i], toks[i + 1], toks[i + 2]
        if k1 != "ident":
            raise QueryError(f"Expected a field name, found {v1!r}.")
        op = v2.lower()
        if k2 == "ident" and op in ("like", "ilike"):
            sql_op = "LIKE"
        elif k2 == "op":
            sql_op = OPS[op]
        else:
            raise QueryError(f"Expected an operator after {v1!r}, found {v2!r}.")
        if k3 == "str":
            value: Any = bytes(v3[1:-1], "utf-8").decode("unicode_escape")
        elif k3 == "num":
            value = float(v3)
        else:
            raise QueryError(f"Expected a number or a quoted string, found {v3!r}.")
        clauses.append(_clause(parse_field(v1), sql_op, op == "ilike", value, params))
        i += 3
        if i == len(toks):
            break
        if toks[i] != ("ident", toks[i][1]) or toks[i][1].lower() != "and":
            raise QueryError(f"Expected `and` between clauses, found {toks[i][1]!r}.")
        i += 1
        if i + 3 > len(toks):
            raise QueryError(f"Incomplete filter {text!r}: expected FIELD OP VALUE after and.")
    return " AND ".join(clauses), params


def _clause(field: Field, op: str, ci: bool, value: Any, params: list[Any]) -> str:
    lhs = "x.value"
    if ci:
        lhs, value = "lower(x.value)", str(value).lower()
    if field.kind == "metrics":
        if op == "LIKE" or isinstance(value, str):
            raise QueryError(f"metrics.{field.key} is numeric: compare it with a number.")
        params += [field.key, value]
        return (
            "EXISTS (SELECT 1 FROM latest_metric x WHERE x.run_id = r.id "
            f"AND x.key = ? AND x.value {op} ?)"
        )
    if field.kind in ("params", "tags"):
        table = "param" if field.kind == "params" else "tag"
        if isinstance(value, float) and op not in ("=", "!="):
            params += [field.key, value]
            return (
                f"EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.id AND x.key = ? "
                f"AND CAST(x.value AS REAL) {op} ?)"
            )
        if isinstance(value, float):
            value = _num_text(value)
        params += [field.key, value]
        return (
            f"EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = r.id AND x.key = ? AND {lhs} {op} ?)"
        )
    column = ATTRIBUTES[field.key]
    if ci:
        column, value = f"lower({column})", str(value).lower()
    params.append(value)
    return f"{column} {op} ?"


def _num_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def compile_order(order_by: list[str] | str | None) -> tuple[str, list[Any]]:
    if not order_by:
        return "r.start_time DESC, r.id", []
    if isinstance(order_by, str):
        order_by = [order_by]
    parts, params = [], []
    for item in order_by:
        words = item.strip().rsplit(None, 1)
        direction = "ASC"
        if len(words) == 2 and words[1].upper() in ("ASC", "DESC"):
            text, direction = words[0], words[1].upper()
        else:
            text = item.strip()
        field = parse_field(text)
        if field.kind == "attr":
            expr, keys = ATTRIBUTES[field.key], []
        else:
            table = {"metrics": "latest_metric", "params": "param", "tags": "tag"}[field.kind]
            expr = f"(SELECT x.value FROM {table} x WHERE x.run_id = r.id AND x.key = ?)"
            keys = [field.key]
        # Runs without the value sort last in both directions.
        parts.append(f"({expr}) IS NULL, {expr} {direction}")
        params += keys + keys
    parts.append("r.id")
    return ", ".join(parts), params
