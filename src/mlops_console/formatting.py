"""How every surface writes a time and a number (the CLI, the console, model cards and
monitoring reports): one place, so they agree."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


def when(ts: float | None, seconds: bool = True, utc: bool = False) -> str:
    """A local (or UTC) date and time; '-' for none."""
    if ts is None:
        return "-"
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    if utc:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(shape + " UTC")
    return dt.datetime.fromtimestamp(ts).strftime(shape)


def num(value: Any) -> str:
    """A number in 4 significant digits (floats), as it is otherwise; '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
