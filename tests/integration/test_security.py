"""User-supplied names never become paths outside the workspace (issue 13, security 5).

Deployment, dataset, model, pipeline and feature view names are checked in one place
(`mlops_console.names`); the workspace here is made by the real `mlops` command.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.unit.test_pipeline import SPEC, make_data

from mlops_console.errors import InvalidName, MlopsError
from mlops_console.names import check_name
from mlops_console.workspace import Workspace


def open_dir() -> Path:
    """A fresh folder that every user may traverse (pytest's own tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="mlops-sec-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


# --- names, on a workspace the CLI made ---------------------------------


def cli(*args, **kw):
    return run_cli(*args, env={"MLOPS_PREDLOG_ROTATE": "1"}, **kw)


@pytest.fixture(scope="module")
def cli_ws():
    """A workspace made by the real `mlops` command: one dataset version, one model."""
    folder = open_dir()
    root = folder / "ws"
    root.mkdir(mode=0o755)
    cli("init", str(root), check=True)
    make_data().to_parquet(root / "data" / "d.parquet")
    (root / "pipelines" / "p.toml").write_text(SPEC.format(auto="true", extra=""))
    w = ("-w", str(root))
    cli(*w, "data", "add", "d", "data/d.parquet", "--timestamp", "ts", "--entity", "id", check=True)
    cli(*w, "run", "p", "--set", "search.method=none", check=True)
    yield root
    cli(*w, "deployments", "stop", "svc")
    shutil.rmtree(folder, ignore_errors=True)


def files_outside(folder: Path, root: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_relative_to(root)}


@pytest.mark.parametrize(
    "name", ["../../escaped", "../../../escaped", "/tmp/mlops-sec-escaped", "svc\n", "a/b", ".."]
)
def test_deploy_refuses_a_name_that_is_not_a_plain_name(cli_ws, name):
    before = files_outside(cli_ws.parent, cli_ws)
    proc = cli("-w", str(cli_ws), "deploy", "m@champion", "--name", name)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"Error: Deployment name {name!r} is not allowed"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert files_outside(cli_ws.parent, cli_ws) == before
    assert not Path("/tmp/mlops-sec-escaped").exists()
    assert not (cli_ws / "escaped").exists()
    deployments = cli_ws / ".mlops" / "deployments"
    assert not deployments.exists() or list(deployments.iterdir()) in ([], [deployments / "svc"])


def test_run_refuses_a_pipeline_file_outside_the_workspace(cli_ws):
    outside = cli_ws.parent / "evil.toml"
    outside.write_text(SPEC.format(auto="true", extra=""))
    for ref in (str(outside), "../evil.toml", "../evil"):
        proc = cli("-w", str(cli_ws), "run", ref)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "leads outside" in proc.stderr or "is not allowed" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "kind", ["dataset", "model", "deployment", "pipeline", "feature view", "alias"]
)
@pytest.mark.parametrize("name", ["ok\n", "../x", "/abs", "a/b", "", " x"])
def test_every_kind_of_name_is_checked_the_same_way(kind, name):
    with pytest.raises(InvalidName, match="is not allowed"):
        check_name(kind, name)


def test_names_reach_no_path_in_the_services(tmp_path):
    with Workspace.init(tmp_path / "ws") as ws:
        make_data(50).to_parquet(ws.root / "data" / "d.parquet")
        with pytest.raises(InvalidName, match="Dataset name"):
            ws.data.add("d\n", "data/d.parquet")
        with pytest.raises(InvalidName, match="Model name"):
            ws.models.register("m\n", artifact=b"x")
        with pytest.raises(InvalidName, match="Deployment name"):
            ws.deployments.target("local").logs("../../x")
        with pytest.raises(MlopsError, match="Pipeline name"):
            ws.pipeline_path("../x")
        (ws.root / "features" / "f.toml").write_text(
            'name = "f\\n"\nentities = ["id"]\ntimestamp = "ts"\nsql = "SELECT 1"\n'
        )
        with pytest.raises(MlopsError, match="f.toml"):
            ws.features.views()
        assert not (tmp_path / "x").exists()
