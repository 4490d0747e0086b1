"""The Serve application config the ray target builds from a deployment's options (no
Ray needed: what is PUT is plain data)."""

from __future__ import annotations

import hashlib

import pytest

from mlops_console.errors import ConfigError
from mlops_console.workspace import Workspace
from mlops_ray.dashboard import dashboard_address
from mlops_ray.target import RayTarget


@pytest.fixture
def target(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    yield RayTarget(ws)
    ws.close()


def deployment(target: RayTarget, **config) -> dict:
    app = target._app_config("churn", config, {"generation": 1})
    return app["deployments"][0]


def test_replicas_autoscaling_and_cpus_from_options(target):
    assert deployment(target) == {
        "name": "MlopsModel",
        "user_config": {"generation": 1},
        "num_replicas": 1,
    }
    assert deployment(target, replicas=3, num_cpus=0.5)["num_replicas"] == 3
    assert deployment(target, num_cpus=0.5)["ray_actor_options"] == {"num_cpus": 0.5}
    auto = deployment(target, min_replicas=1, max_replicas=4, target_ongoing_requests=8)
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8.0,
    }
    table = deployment(
        target, autoscaling={"min_replicas": 2, "max_replicas": 5, "upscale_delay_s": 3}
    )
    assert table["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 5,
        "upscale_delay_s": 3,
    }


def test_the_application_holds_only_the_tokens_hash(target):
    app = target._app_config("churn", {"route_prefix": "/models/churn"}, {"generation": 1})
    assert app["import_path"] == "mlops_ray.app:build" and app["route_prefix"] == "/models/churn"
    token = (target.ws.state / "deployments" / "churn" / "ray-token").read_text().strip()
    assert app["args"]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(app)
    assert (target.ws.state / "deployments" / "churn" / "ray-token").stat().st_mode & 0o077 == 0
    assert app["args"]["settings"]["MLOPS_MAX_ROWS"] == str(target.ws.config.serving.max_rows)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"replicas": "two"}, "whole number"),
        ({"replicas": 0}, "at least 1"),
        ({"replicas": 2, "max_replicas": 4}, "not both"),
        ({"num_cpus": -1}, "give a number"),
        ({"autoscaling": "yes"}, "table of Ray Serve's autoscaling_config"),
        ({"route_prefix": "churn"}, "must start with /"),
    ],
)
def test_bad_options_are_plain_errors(target, config, message):
    with pytest.raises(ConfigError, match=message):
        target._app_config("churn", config, {"generation": 1})


def test_the_address_is_the_dashboards_url(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert dashboard_address({}) == "http://127.0.0.1:8265"
    assert dashboard_address({"address": "http://ray-head:8265/"}) == "http://ray-head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    assert dashboard_address({}) == "http://10.0.0.5:8265"
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # Ray's own form for `ray.init`: not a URL
    assert dashboard_address({}) == "http://127.0.0.1:8265"
    with pytest.raises(Exception, match="not an http"):
        dashboard_address({"address": "ray-head:8265"})
