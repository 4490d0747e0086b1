"""Logical column types shared by contracts, profiles and signatures."""

from __future__ import annotations

from contextlib import contextmanager

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


BATCH = 1000  # columns per query when profiling or checking a wide table


@contextmanager
def narrow(con, relation: str, schema, names: list[str]):
    """A relation with just `names` of `relation`: the relation itself when it is narrow,
    else a temporary copy. A query over a registered Arrow table costs time per column
    of the table, used or not (~0.3 s at 10,000 columns), so each batch of a wide table
    is queried from its own copy."""
    if len(schema) <= BATCH or not names:
        yield relation
        return
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _batch AS SELECT {', '.join(map(quote_ident, names))} "
        f"FROM {relation}"
    )
    try:
        yield "_batch"
    finally:
        con.execute("DROP TABLE IF EXISTS _batch")
