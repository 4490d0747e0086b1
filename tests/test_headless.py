"""The core runs without Textual; `mlops --help` stays light."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import mlops_console

REPO = Path(__file__).resolve().parents[1]


def _core_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(mlops_console.__path__, "mlops_console.")
        if not m.name.startswith("mlops_console.tui") and ".migrations" not in m.name
    )


def test_core_imports_without_textual():
    code = (
        "import importlib, sys\n"
        f"for m in {_core_modules()!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'textual')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_linter_contract_covers_every_core_package():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    contract = cfg["tool"]["importlinter"]["contracts"][0]
    assert "textual" in contract["forbidden_modules"]
    top = {".".join(m.split(".")[:2]) for m in _core_modules()} - {"mlops_console.__init__"}
    top.discard("mlops_console")
    assert top <= set(contract["source_modules"]), top - set(contract["source_modules"])


def test_import_linter_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from mlops_console.cli.main import cli\n"
        "heavy = {'sklearn', 'pandas', 'numpy', 'sqlalchemy', 'alembic', 'pyarrow', 'textual'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_server_imports_without_the_heavy_parts():
    code = (
        "import sys\n"
        "import mlops_console.serving.app\n"
        "heavy = {'sklearn', 'pandas', 'sqlalchemy', 'sqlmodel', 'alembic', 'pydantic', 'duckdb', 'pyarrow', 'textual'}\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reading_the_registry_imports_neither_sqlalchemy_nor_pydantic(tmp_path):
    """What keeps `mlops runs list` and the other read-only commands fast (bench/cli.py
    measures it): the runtime store is plain sqlite3 and mlops.toml is parsed on first use."""
    from mlops_console.workspace import Workspace

    Workspace.init(tmp_path / "w").close()
    code = (
        "import sys\n"
        "from mlops_console.workspace import Workspace\n"
        f"ws = Workspace.open({str(tmp_path / 'w')!r})\n"
        "ws.runs.search(); ws.models.list(); ws.data.list(); ws.deployments.list()\n"
        "heavy = {'sqlalchemy', 'sqlmodel', 'alembic', 'pydantic', 'pandas', 'sklearn', 'textual'}\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
