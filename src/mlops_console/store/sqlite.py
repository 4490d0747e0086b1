"""Connections to the registry over the plain `sqlite3` module.

The services were written against SQLAlchemy's `Connection.exec_driver_sql` (driver SQL,
`?` parameters, results with `first()`, `scalar()`, `all()`, `mappings()`,
`scalars()`); this module keeps that small surface, so the ~130 ms of CPU SQLAlchemy costs
to import is paid only by a migration, never by a command that reads a few rows.

Rows are tuples with their column names as attributes (`row.status`, `row._mapping`),
as SQLAlchemy's rows are; compared with plain tuples they are equal.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_ROW_TYPES: dict[tuple[str, ...], Any] = {}


def _row_type(description) -> Any:
    names = tuple(d[0] for d in description)
    kind = _ROW_TYPES.get(names)
    if kind is None:
        base = namedtuple("Row", names, rename=True)  # type: ignore[misc]  # names are data

        class Row(base):
            __slots__ = ()

            @property
            def _mapping(self) -> dict[str, Any]:
                return dict(zip(names, self, strict=True))

        kind = _ROW_TYPES[names] = Row
    return kind


class Result:
    """What one statement returned; read it once, as with SQLAlchemy."""

    def __init__(self, cursor: sqlite3.Cursor):
        self._cursor = cursor
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    def _rows(self, rows: list[tuple]) -> list:
        description = self._cursor.description
        if description is None:
            return []
        kind = _row_type(description)
        return [kind._make(r) for r in rows]

    def fetchall(self) -> list:
        return self._rows(self._cursor.fetchall())

    all = fetchall

    def __iter__(self) -> Iterator:
        return iter(self.fetchall())

    def fetchone(self):
        row = self._cursor.fetchone()
        return None if row is None else self._rows([row])[0]

    def first(self):
        row = self.fetchone()
        self._cursor.close()
        return row

    def scalar(self) -> Any:
        row = self._cursor.fetchone()
        self._cursor.close()
        return None if row is None else row[0]

    def scalars(self) -> _Values:
        return _Values([r[0] for r in self._cursor.fetchall()])

    def mappings(self) -> _Values:
        description = self._cursor.description or ()
        names = [d[0] for d in description]
        return _Values([dict(zip(names, r, strict=True)) for r in self._cursor.fetchall()])


class _Values(list):
    def all(self) -> list:
        return list(self)

    def first(self):
        return self[0] if self else None


class Connection:
    """One transaction's view of a pooled sqlite3 connection."""

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw

    def exec_driver_sql(self, sql: str, params: Sequence | dict | None = None) -> Result:
        """Run one statement; a list of parameter tuples runs it once per tuple."""
        if params is None:
            return Result(self.raw.execute(sql))
        if isinstance(params, list):
            return Result(self.raw.executemany(sql, params))
        return Result(self.raw.execute(sql, params))


_POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # another thread may have held a pool's lock at the fork: the child starts afresh
    for pool in list(_POOLS):
        pool._lock = threading.Lock()
        pool._idle, pool._pid = [], os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Pool:
    """Idle connections kept for reuse by any thread (sqlite3 connections are opened with
    check_same_thread=False and each is used by one transaction at a time)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], keep: int = 8):
        self._connect = connect
        self._keep = keep
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        _POOLS.add(self)

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():  # a forked child never shares its parent's handles
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give(self, raw: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self._keep:
                self._idle.append(raw)
                return
        raw.close()

    @contextmanager
    def transaction(self, mode: str, commit: bool) -> Iterator[Connection]:
        raw = self._take()
        try:
            raw.execute(f"BEGIN {mode}")
        except BaseException:
            raw.close()
            raise
        try:
            yield Connection(raw)
        except BaseException:
            try:
                self._end(raw, "ROLLBACK")
            except sqlite3.Error:
                pass  # the first error is the one to report; the connection is closed
            raise
        self._end(raw, "COMMIT" if commit else "ROLLBACK")

    def _end(self, raw: sqlite3.Connection, verb: str) -> None:
        try:
            if raw.in_transaction:
                raw.execute(verb)
        except BaseException:
            raw.close()  # a connection whose transaction state is unknown is not reused
            raise
        self._give(raw)

    def close(self) -> None:
        """Close the idle connections; those in use close when their transaction ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for raw in idle:
            raw.close()
