"""The example plugin, installed for real: found through its entry point, its command run by
the real `mlops` in a subprocess, its notifier and check as mlops-console calls them."""

import json
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import mlops_example


def mlops(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mlops_console.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_it_is_installed_with_an_entry_point_in_the_mlops_console_group():
    eps = {ep.name: ep for ep in metadata.entry_points(group="mlops_console")}
    assert eps["example"].value == "mlops_example"
    assert eps["example"].dist.name == "mlops-example"


def test_its_command_runs_inside_mlops():
    proc = mlops("example", "hello", "--name", "Ada")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Hello, Ada, from mlops-example 0.1.0."
    assert "example" in mlops("--help").stdout


def test_check_loads_it_and_names_what_it_provides():
    proc = mlops("plugins", "list", "--check", "--json")
    assert proc.returncode == 0, proc.stderr
    example = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}["example"]
    assert example["loaded"] is True
    assert {"notifiers:jsonl", "model_checks:max_model_size"} <= set(example["provides"])


def test_the_notifier_appends_one_json_line_per_event(tmp_path, monkeypatch):
    out = tmp_path / "events.jsonl"
    monkeypatch.setenv("MLOPS_EXAMPLE_EVENTS", str(out))
    for text in ("first", "second"):
        mlops_example.jsonl_notifier(
            {"kind": "promoted", "text": text, "settings": {}, "state": str(tmp_path)}
        )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in lines] == ["first", "second"]
    assert "settings" not in lines[0] and "state" not in lines[0]
    # [notifiers.jsonl] path wins over the environment
    mlops_example.jsonl_notifier(
        {"text": "x", "settings": {"path": str(tmp_path / "cfg.jsonl")}, "state": str(tmp_path)}
    )
    assert (tmp_path / "cfg.jsonl").exists() and len(out.read_text().splitlines()) == 2


def test_the_model_size_check_fails_a_model_over_the_limit(monkeypatch):
    monkeypatch.setenv("MLOPS_EXAMPLE_MAX_MODEL_BYTES", "1000")
    assert mlops_example.max_model_size(SimpleNamespace(model_bytes=999))["passed"] is True
    big = mlops_example.max_model_size(SimpleNamespace(model_bytes=1001))
    assert big["passed"] is False and big["measured"] == {"model_bytes": 1001, "limit_bytes": 1000}
