import os

import pytest

from mlops_console.errors import WorkspaceNotFound
from mlops_console.workspace import Workspace, find_root


def test_init_lays_out_the_design_folders(tmp_path):
    with Workspace.init(tmp_path / "w", sample=True) as ws:
        for sub in (
            "pipelines",
            "features",
            "data",
            ".mlops/objects",
            ".mlops/lake",
            ".mlops/logs",
        ):
            assert (ws.root / sub).is_dir(), sub
        assert (ws.root / "mlops.toml").is_file()
        assert (ws.root / ".mlops" / "registry.db").is_file()
        assert (ws.root / "data" / "churn.csv").stat().st_size > 1_000_000
        assert (ws.root / "pipelines" / "churn.toml").is_file()
        assert ".mlops/" in (ws.root / ".gitignore").read_text()


def test_init_keeps_existing_files(tmp_path):
    root = tmp_path / "w"
    Workspace.init(root).close()
    (root / "mlops.toml").write_text('[workspace]\nname = "mine"\n')
    with Workspace.init(root) as ws:
        assert ws.config.workspace.name == "mine"


def test_open_finds_nearest_upward(tmp_path, monkeypatch):
    Workspace.init(tmp_path / "outer").close()
    Workspace.init(tmp_path / "outer" / "inner").close()
    deep = tmp_path / "outer" / "inner" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_root() == (tmp_path / "outer" / "inner").resolve()
    # an explicit path wins over the current folder
    assert find_root(tmp_path / "outer") == (tmp_path / "outer").resolve()


def test_env_var_is_used_before_the_current_folder(tmp_path, monkeypatch):
    Workspace.init(tmp_path / "a").close()
    Workspace.init(tmp_path / "b").close()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("MLOPS_WORKSPACE", str(tmp_path / "b"))
    assert find_root() == (tmp_path / "b").resolve()
    monkeypatch.setenv("MLOPS_WORKSPACE", str(tmp_path / "nowhere"))
    with pytest.raises(WorkspaceNotFound, match="MLOPS_WORKSPACE"):
        find_root()


def test_no_workspace_is_a_clear_error_and_creates_nothing(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(WorkspaceNotFound, match="mlops init"):
        Workspace.open()
    with pytest.raises(WorkspaceNotFound, match="not inside an mlops workspace"):
        Workspace.open(empty)
    assert os.listdir(empty) == []


def test_a_cloned_workspace_without_state_gets_a_fresh_store(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    (root / "mlops.toml").write_text("")
    with Workspace.open(root) as ws:
        assert ws.runs.search() == []


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example/T0/SECRET-TOKEN\x00", "ht!tp://SECRET-TOKEN", "http://[SECRET-TOKEN/"],
)
def test_a_malformed_webhook_url_never_reaches_the_message(url):
    from mlops_console.monitoring.notifiers import webhook_notifier

    with pytest.raises(RuntimeError) as info:
        webhook_notifier({"text": "t", "kind": "opened", "alert": {}, "settings": {"url": url}})
    assert "SECRET" not in str(info.value) and "webhook not reached" in str(info.value)
