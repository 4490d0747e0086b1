"""Durations as users write them ('90d', '12h', '30m', '10s', '3600') and their seconds.

Every layer parses them here: windows and cadences in mlops.toml, schedule intervals,
feature view TTLs and `--window` on the command line.
"""

from __future__ import annotations

import re

from mlops_console.errors import MlopsError

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DurationError(MlopsError, ValueError):
    """Not a duration, or 0 where a time must pass; a ValueError too, so settings
    validated by pydantic report it as the setting's error."""


def parse_duration(value: str | int | float, what: str | None = None) -> float:
    """'90d', '12h', '3600' or a number to seconds. With `what` (the setting's name) the
    duration must be longer than 0; without, 0 is allowed (a TTL's "no limit")."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(value)
        if not m:
            raise DurationError(
                f"{value!r} is not a duration; use e.g. '90d', '12h', '30m' or 0 (no limit)"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if what is not None and seconds <= 0:
        raise DurationError(f"{what} {value!r} must be longer than 0 (e.g. '1h', '30m', '10s')")
    return seconds
