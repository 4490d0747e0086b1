"""The demo's own workspace: its settings edits keep the rest of a TOML file, and it
never starts afresh in a folder it did not make."""

from __future__ import annotations

import tomllib

from click.testing import CliRunner

from mlops_console.cli.demo import set_keys
from mlops_console.cli.main import cli

TEXT = """name = "p"

[search]
method = "random"        # a comment
candidates = 20

[search.space]
max_iter = [100, 200]

[deploy]
target = "local"
"""


def test_set_keys_changes_adds_and_removes_keys_in_one_section_only():
    out = set_keys(TEXT, "search", {"profile": '"quick"', "candidates": None, "method": '"none"'})
    out = set_keys(out, "deploy", {"auto": "true"})
    out = set_keys(out, "monitoring", {"every": '"2s"'})
    data = tomllib.loads(out)
    assert data["search"] == {
        "method": "none",
        "profile": "quick",
        "space": {"max_iter": [100, 200]},
    }
    assert data["deploy"] == {"target": "local", "auto": True}
    assert data["monitoring"] == {"every": "2s"} and data["name"] == "p"


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["demo", str(mine)])
    assert result.exit_code == 1
    assert "was not made by `mlops demo`" in result.output
    assert (mine / "todo.txt").read_text() == "keep me"
