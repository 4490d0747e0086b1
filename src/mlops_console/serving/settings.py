"""The model server's limits and switches, read from the environment.

The environment is the one channel every place a server runs shares (a local process, a
container, an edge device), so each setting is an `MLOPS_*` variable; `mlops.toml`'s
`[serving]` section sets them for the servers the workspace starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class SettingError(ValueError):
    """An MLOPS_* variable holds a value the server cannot use."""


def _number(env, name: str, default, kind=int, minimum=0):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a {kind.__name__}.") from None
    if value < minimum:
        raise SettingError(f"{name} must be at least {minimum}, not {value}.")
    return value


def secret(env, name: str) -> str | None:
    """A token from NAME, or from the file NAME_FILE names (a mounted secret, which, unlike
    the environment, `docker inspect` does not show)."""
    path = env.get(name + "_FILE")
    if path:
        try:
            with open(path) as fh:
                return fh.read().strip() or None
        except OSError as exc:
            raise SettingError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}.") from None
    return env.get(name) or None


def _flag(env, name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}={raw!r}: use 1 or 0.")


@dataclass
class ServerSettings:
    max_body_bytes: int = 32 << 20  # MLOPS_MAX_BODY_BYTES
    max_rows: int = 100_000  # MLOPS_MAX_ROWS: rows per request
    max_body_memory: int = 128 << 20  # MLOPS_MAX_BODY_MEMORY: bytes of bodies held at once
    impute_missing: bool = False  # MLOPS_IMPUTE_MISSING: let nulls reach the model's imputer
    max_inflight: int = 256  # MLOPS_MAX_INFLIGHT: scoring requests at once, then 503
    header_timeout: float = 10.0  # MLOPS_HEADER_TIMEOUT: seconds to send the request head
    body_timeout: float = 60.0  # MLOPS_BODY_TIMEOUT: seconds to send the whole body
    feedback_token: str | None = None  # MLOPS_FEEDBACK_TOKEN: required by POST /feedback if set
    feedback_rate: float = 200.0  # MLOPS_FEEDBACK_RATE: feedback requests per second per client
    allowed_hosts: list[str] = field(default_factory=list)  # MLOPS_ALLOWED_HOSTS, comma-separated
    # MLOPS_PREDLOG_ROTATE: seconds a prediction log segment stays open at most, so it is
    # collected at least this often (tests and demos shorten it)
    predlog_rotate: float = 60.0
    bulk_bytes: int = 256 << 10  # bodies at least this big are parsed off the event loop

    def __post_init__(self):
        # one body at the cap always fits
        self.max_body_memory = max(self.max_body_memory, self.max_body_bytes)

    @classmethod
    def from_env(cls, env=None) -> ServerSettings:
        env = os.environ if env is None else env
        return cls(
            max_body_bytes=_number(env, "MLOPS_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            max_rows=_number(env, "MLOPS_MAX_ROWS", cls.max_rows, minimum=1),
            max_body_memory=_number(env, "MLOPS_MAX_BODY_MEMORY", cls.max_body_memory, minimum=1),
            impute_missing=_flag(env, "MLOPS_IMPUTE_MISSING"),
            max_inflight=_number(env, "MLOPS_MAX_INFLIGHT", cls.max_inflight, minimum=1),
            header_timeout=_number(env, "MLOPS_HEADER_TIMEOUT", cls.header_timeout, float, 0.1),
            body_timeout=_number(env, "MLOPS_BODY_TIMEOUT", cls.body_timeout, float, 0.1),
            feedback_token=secret(env, "MLOPS_FEEDBACK_TOKEN"),
            feedback_rate=_number(env, "MLOPS_FEEDBACK_RATE", cls.feedback_rate, float, 0.1),
            predlog_rotate=_number(env, "MLOPS_PREDLOG_ROTATE", cls.predlog_rotate, float, 0.1),
            allowed_hosts=[
                h.strip().lower()
                for h in env.get("MLOPS_ALLOWED_HOSTS", "").split(",")
                if h.strip()
            ],
        )
