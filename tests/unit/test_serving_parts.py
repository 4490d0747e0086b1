"""The server's traffic state and its settings, on their own (no server process)."""

from __future__ import annotations

import random

import pytest

from mlops_console.config import WorkspaceConfig
from mlops_console.serving.settings import ServerSettings, SettingError
from mlops_console.serving.traffic import Traffic, TrafficError


class Version:
    """Stands in for a ServedModel: Traffic only reads `version` and keeps references."""

    def __init__(self, version: int):
        self.version = version

    def __repr__(self) -> str:
        return f"v{self.version}"


def test_a_canary_takes_its_share_and_promote_makes_it_primary():
    v1, v2 = Version(1), Version(2)
    t = Traffic(v1)
    assert t.swap(v2, "canary", percent=25.0) is None
    random.seed(7)
    roles = [t.pick()[1] for _ in range(4000)]
    assert 0.2 < roles.count("canary") / len(roles) < 0.3
    assert t.role_of_version("2") == (v2, "canary")
    assert t.promote() is v1
    assert (t.primary, t.canary, t.canary_percent) == (v2, None, 0.0)
    assert {t.pick()[1] for _ in range(100)} == {"primary"}
    assert t.swaps == 1


def test_rollback_drops_canary_and_shadow_and_refuses_when_there_is_none():
    v1, v2, v3 = Version(1), Version(2), Version(3)
    t = Traffic(v1)
    with pytest.raises(TrafficError, match="no canary to promote"):
        t.promote()
    with pytest.raises(TrafficError, match="no canary or shadow"):
        t.rollback()
    t.swap(v2, "canary", 10.0)
    t.swap(v3, "shadow")
    assert t.served() == [v1, v2, v3]
    assert t.rollback() == [v2, v3]
    assert t.served() == [v1]
    with pytest.raises(TrafficError, match="role must be"):
        t.swap(v2, "sidecar")


def test_prediction_log_rotation_is_a_checked_setting():
    assert ServerSettings.from_env({}).predlog_rotate == 60.0
    assert ServerSettings.from_env({"MLOPS_PREDLOG_ROTATE": "2.5"}).predlog_rotate == 2.5
    with pytest.raises(SettingError, match="MLOPS_PREDLOG_ROTATE='soon' is not a float"):
        ServerSettings.from_env({"MLOPS_PREDLOG_ROTATE": "soon"})
    with pytest.raises(SettingError, match="MLOPS_PREDLOG_ROTATE must be at least"):
        ServerSettings.from_env({"MLOPS_PREDLOG_ROTATE": "0"})


def test_serving_section_sets_rotation_and_the_docker_base_image():
    cfg = WorkspaceConfig.model_validate(
        {"serving": {"predlog_rotate": 5, "docker_base_image": "mlops-local/python:3.11"}}
    )
    assert cfg.serving.server_env()["MLOPS_PREDLOG_ROTATE"] == "5.0"
    assert cfg.serving.docker_base_image == "mlops-local/python:3.11"
    assert WorkspaceConfig.model_validate({}).serving.docker_base_image == "python:3.11-slim"
