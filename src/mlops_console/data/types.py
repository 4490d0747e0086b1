"""Logical column types shared by contracts, profiles and signatures."""

from __future__ import annotations

NUMERIC = ("integer", "float")


def logical_type(arrow_type) -> str:
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_integer(arrow_type):
        return "integer"
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return "float"
    if t.is_timestamp(arrow_type):
        return "timestamp"
    if t.is_date(arrow_type):
        return "date"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_dictionary(arrow_type):
        return "string"
    if t.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def accepts(expected: str, actual: str) -> bool:
    """Whether data of type `actual` satisfies a contract that says `expected`."""
    if expected == actual or actual == "null":
        return True
    return expected == "float" and actual == "integer"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
