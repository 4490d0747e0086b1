"""The scenario format: shipped scenarios parse; a mistake names the file and the key;
a trainer's own folder is found through [labs] paths and $MLOPS_LABS_PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_console.errors import ConfigError, NotFound
from mlops_console.labs.catalog import SHIPPED, find_scenario, scenarios
from mlops_console.labs.spec import load_scenario

SHIPPED_NAMES = {
    "first-model",
    "drift",
    "broken-file",
    "bad-model",
    "canary-gate",
    "decay",
    "latency",
}

MINIMAL = """
name = "mine"
title = "Mine"
summary = "A trainer's scenario."
assets = "{assets}"

[[objectives]]
id = "ingest"
title = "Ingest"
check = {{ kind = "dataset_accepted", dataset = "churn" }}
"""


def test_every_shipped_scenario_parses():
    found = {s.name: s for s in scenarios(None)}
    assert set(found) >= SHIPPED_NAMES
    for name in SHIPPED_NAMES:
        assert not found[name].error, found[name].error
        sc = find_scenario(None, name)
        assert sc.objectives and sc.solution, name
        for step in sc.setup:  # every asset a setup copies is shipped
            if step.do == "copy":
                assert (sc.assets_dir / step.asset).is_file(), (name, step.asset)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("check = {", "chek = {"), "objectives.0.chek"),
        (('kind = "dataset_accepted"', 'kind = "dataset_acepted"'), "objectives.0.check"),
        (('at = "after:ingest"', 'at = "after:nope"'), "nope"),
        (("requests = 150", 'requests = "many"'), "timeline.1.steps.1"),
        (('[[solution]]\ndo = "ingest"', '[[solution]]\ndo = "ingest"\nforse = true'), "forse"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, change, key):
    text = (SHIPPED / "drift.toml").read_text()
    if change[0] == 'at = "after:ingest"':
        text += '\n[[timeline]]\nat = "after:ingest"\nsay = "x"\n'
    assert change[0] in text
    broken = tmp_path / "drift.toml"
    broken.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as err:
        load_scenario(broken)
    message = str(err.value)
    assert str(broken) in message and key in message, message


def test_invalid_toml_is_named(tmp_path: Path):
    bad = tmp_path / "oops.toml"
    bad.write_text('name = "oops\n')
    with pytest.raises(ConfigError, match="oops.toml: not valid TOML"):
        load_scenario(bad)


def test_a_trainers_folder_is_found(ws, tmp_path: Path, monkeypatch):
    mine = tmp_path / "my-labs"
    (mine / "data").mkdir(parents=True)
    (mine / "mine.toml").write_text(MINIMAL.format(assets="data"))
    (mine / "broken.toml").write_text('name = "broken"\n')
    assert "mine" not in {s.name for s in ws.labs.list()}
    with pytest.raises(NotFound, match="mlops lab list"):
        ws.labs.scenario("mine")

    monkeypatch.setenv("MLOPS_LABS_PATH", str(mine))
    listed = {s.name: s for s in ws.labs.list()}
    assert listed["mine"].objectives == 1 and not listed["mine"].error
    assert "missing required key `title`" in listed["broken"].error
    assert ws.labs.scenario("mine").assets_dir == mine / "data"

    monkeypatch.delenv("MLOPS_LABS_PATH")
    with ws.config_path.open("a") as fh:
        fh.write(f'\n[labs]\npaths = ["{mine}"]\n')
    ws.reload_config()
    assert ws.labs.scenario("mine").title == "Mine"


def test_a_name_must_match_its_file(tmp_path: Path, ws, monkeypatch):
    (tmp_path / "other.toml").write_text(MINIMAL.format(assets="."))
    monkeypatch.setenv("MLOPS_LABS_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="must match the file's name"):
        ws.labs.scenario("other")


def test_no_lab_running_is_a_clear_error(ws):
    from mlops_console.errors import Conflict

    assert ws.labs.current() is None
    with pytest.raises(Conflict, match="mlops lab start SCENARIO"):
        ws.labs.status()


def test_a_lab_never_starts_over_a_workspace_of_ones_own(tmp_path: Path):
    from mlops_console.errors import Conflict
    from mlops_console.workspace import Workspace

    with Workspace.init(tmp_path / "mine", sample=True) as mine:
        mine.data.add("churn", "data/churn_2026_01.csv", timestamp="event_time")
        with pytest.raises(Conflict, match="mlops lab start first-model DIR"):
            mine.labs.start("first-model")
        assert (mine.root / "data" / "churn.csv").is_file()  # nothing was touched
        assert not (mine.state / "lab").exists()
