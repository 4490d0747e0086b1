"""The Serve application's deployment settings from a deployment's options (replicas or
autoscaling, CPUs, the proxy), checked: plain data, what the target PUTs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_console.deploy.base import DeployError
from mlops_console.errors import ConfigError

DEPLOYMENT = "MlopsModel"  # the replicas' Serve deployment (app.py)
INT_OPTIONS = ("replicas", "min_replicas", "max_replicas", "http_port")
FLOAT_OPTIONS = ("num_cpus", "target_ongoing_requests")


def check_options(config: dict[str, Any]) -> dict[str, Any]:
    """A deployment's Ray options, checked: replicas or autoscaling, CPUs, the proxy."""
    out: dict[str, Any] = {}
    for key in INT_OPTIONS:
        if config.get(key) is not None:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"Ray option {key}={value!r}: give a whole number, e.g. -o {key}=2."
                )
            out[key] = value
    for key in FLOAT_OPTIONS:
        if config.get(key) is not None:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"Ray option {key}={value!r}: give a number, e.g. -o {key}=0.5.")
            out[key] = float(value)
    auto = config.get("autoscaling")
    if auto is not None and not isinstance(auto, dict):
        raise ConfigError(
            "Ray option autoscaling must be a table of Ray Serve's autoscaling_config, e.g. "
            "-o 'autoscaling={min_replicas=1, max_replicas=4}'."
        )
    if "replicas" in out and (auto or "min_replicas" in out or "max_replicas" in out):
        raise ConfigError(
            "Ray options: give replicas (a fixed count) or min_replicas/max_replicas "
            "(autoscaling), not both."
        )
    if out.get("replicas") == 0:
        raise ConfigError("Ray option replicas must be at least 1.")
    prefix = config.get("route_prefix")
    if prefix is not None and not (isinstance(prefix, str) and prefix.startswith("/")):
        raise ConfigError(f"Ray option route_prefix={prefix!r} must start with /.")
    return out


def deployment_config(config: dict[str, Any], user_config: dict[str, Any]) -> dict:
    opts = check_options(config)
    dep: dict[str, Any] = {"name": DEPLOYMENT, "user_config": user_config}
    auto = dict(config.get("autoscaling") or {})
    for key in ("min_replicas", "max_replicas", "target_ongoing_requests"):
        if key in opts:
            auto[key] = opts[key]
    if auto:
        auto.setdefault("min_replicas", 1)
        auto.setdefault("max_replicas", max(auto["min_replicas"], 1))
        dep["autoscaling_config"] = auto
    else:
        dep["num_replicas"] = opts.get("replicas", 1)
    if "num_cpus" in opts:
        dep["ray_actor_options"] = {"num_cpus": opts["num_cpus"]}
    return dep


def proxy_http(config: dict[str, Any]) -> dict[str, Any]:
    """Where the HTTP proxy listens, when this deploy starts Serve (loopback unless told)."""
    opts = check_options(config)
    return {"host": config.get("http_host") or "127.0.0.1", "port": opts.get("http_port", 8000)}


def version_spec(bundle: Path, digest: str | None) -> dict[str, Any]:
    if not digest:
        raise DeployError(
            f"The bundle at {bundle} comes without the registry's digest; the Ray target "
            "serves only versions the registry vouches for (deploy MODEL@alias)."
        )
    return {"path": str(Path(bundle).resolve()), "digest": digest}
