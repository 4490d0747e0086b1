from pathlib import Path

import pytest

from mlops_console.config import load_workspace_config
from mlops_console.errors import ConfigError
from mlops_console.pipeline_spec import load_pipeline


def write(tmp_path: Path, text: str, name: str = "mlops.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_bind_to_loopback(tmp_path):
    cfg = load_workspace_config(write(tmp_path, ""))
    assert cfg.serving.host == "127.0.0.1"
    assert cfg.registry.champion_alias == "champion"


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "[serving]\nprot = 9000\n")
    with pytest.raises(ConfigError) as err:
        load_workspace_config(path)
    msg = str(err.value)
    assert str(path) in msg and "serving.prot" in msg and "unknown key" in msg


def test_wrong_type_says_what_was_expected(tmp_path):
    path = write(tmp_path, '[serving]\nport = "eighty"\n')
    with pytest.raises(ConfigError) as err:
        load_workspace_config(path)
    msg = str(err.value)
    assert "serving.port" in msg and "integer" in msg and "'eighty'" in msg


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match="serving.port"):
        load_workspace_config(write(tmp_path, "[serving]\nport = 70000\n"))


def test_toml_syntax_error(tmp_path):
    path = write(tmp_path, "[serving\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_workspace_config(path)


def test_pipeline_missing_required_key(tmp_path):
    path = write(tmp_path, 'name = "p"\n[data]\npath = "x.csv"\n', "p.toml")
    with pytest.raises(ConfigError, match="missing required key `data.target`"):
        load_pipeline(path)


def test_sample_pipeline_parses():
    from importlib import resources

    text = (resources.files("mlops_console") / "templates" / "churn_pipeline.toml").read_text()
    import tomllib

    from mlops_console.pipeline_spec import PipelineSpec

    spec = PipelineSpec.model_validate(tomllib.loads(text))
    assert spec.data.target == "churned" and spec.data.sensitive == "gender"
    assert spec.search.method == "random" and spec.search.candidates == 20


def test_schedule_and_deploy_are_validated(tmp_path):
    base = 'name = "p"\n[data]\ndataset = "d"\ntarget = "y"\n'
    with pytest.raises(ConfigError, match="five fields"):
        load_pipeline(write(tmp_path, base + '[schedule]\ncron = "* *"\n', "p.toml"))
    with pytest.raises(ConfigError, match="not a duration"):
        load_pipeline(write(tmp_path, base + '[schedule]\ninterval = "soon"\n', "p.toml"))
    with pytest.raises(ConfigError, match="deploy.canary_percent"):
        load_pipeline(write(tmp_path, base + "[deploy]\ncanary_percent = 150\n", "p.toml"))
    spec = load_pipeline(
        write(tmp_path, base + '[schedule]\ninterval = "1d"\ncron = "0 3 * * *"\n', "p.toml")
    )
    assert spec.schedule.interval == "1d"


def test_alert_rules_are_checked(tmp_path):
    ok = load_workspace_config(
        write(
            tmp_path,
            '[[alerts]]\nname = "d"\nmeasure = "psi:x1"\nabove = 0.3\nwindows = 2\n'
            'action = "rollback"\n[notifiers.webhook]\nurl_env = "HOOK"\n',
        )
    )
    assert ok.alerts[0].windows == 2 and ok.notifiers["webhook"].url_env == "HOOK"
    assert ok.monitoring.window == "1h" and ok.monitoring.psi == 0.2
    for text, expected in (
        ('[[alerts]]\nname = "d"\nmeasure = "vibes"\nabove = 1\n', "unknown measure 'vibes'"),
        ('[[alerts]]\nname = "d"\nmeasure = "rps"\nabove = 1\nbelow = 0\n', "exactly one of"),
        ('[[alerts]]\nname = "d"\nmeasure = "rps"\nbelow = 1\naction = "panic"\n', "action"),
        ('[monitoring]\nevery = "often"\n', "not a duration"),
        (
            '[[alerts]]\nname = "d"\nmeasure = "rps"\nbelow = 1\n'
            '[[alerts]]\nname = "d"\nmeasure = "rps"\nbelow = 2\n',
            "unique",
        ),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_workspace_config(write(tmp_path, text))
