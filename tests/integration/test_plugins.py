"""The plugin API with working plugins: the example plugin (plugins/mlops-example, installed
for real) and `extras`, a plugin installed into a site folder for these tests, each found
through its entry point and asked by the core like any built-in."""

import json
import os
import subprocess
import sys
import textwrap
from importlib import invalidate_caches

import pytest
from tests.conftest import run_cli
from tests.integration.test_training_inputs import write_data, write_pipeline

from mlops_console.data.reading import DataError
from mlops_console.deploy.base import Capability, DeployTarget
from mlops_console.errors import ConfigError, Conflict, MlopsError
from mlops_console.events import Event, deliver
from mlops_console.plugins import installed, load_plugins
from mlops_console.workspace import Workspace

EXTRAS = '''
import pluggy
import pyarrow.json

from mlops_console.deploy.base import Capability, DeployTarget

hookimpl = pluggy.HookimplMarker("mlops_console")
CALLS = []
CONFIGS = {}  # deployment -> the config create or update received last


class MemoryTarget(DeployTarget):
    """Serves nothing: records what it was asked, and says its logs live elsewhere."""

    name = "memory"
    capabilities = frozenset({Capability.REMOTE_LOGS})

    def create(self, name, bundle, config, digest=None):
        CALLS.append(("create", name))
        CONFIGS[name] = dict(config)
        return {"endpoint": f"memory://{name}", "status": "running"}

    def update(self, name, bundle, config, role="primary", percent=0.0, digest=None):
        CALLS.append(("update", name, role))
        CONFIGS[name] = dict(config)
        return {"endpoint": f"memory://{name}", "status": "running"}

    def delete(self, name, config=None):
        CALLS.append(("delete", name))

    def get(self, name, config):
        return {"endpoint": f"memory://{name}", "status": "running"}

    def list(self):
        return []

    def predict(self, name, config, records, output="predict"):
        return [0 for _ in records]

    def logs(self, name, tail=100):
        return ""

    def fetch_prediction_logs(self, name, config, dest):
        CALLS.append(("fetch", name))
        return 0


@hookimpl
def mlops_deploy_targets():
    return {"memory": MemoryTarget}


@hookimpl
def mlops_data_sources():
    return {".NDJSON": lambda path: pyarrow.json.read_json(path)}


@hookimpl
def mlops_compute_backends():
    return {"inline": lambda settings: ("inline", settings)}


@hookimpl
def mlops_console_areas():
    from mlops_console.tui.areas import Area, Listing

    return [
        Area(
            "extras",
            "Extras",
            "An area a plugin added.",
            lambda ws: Listing(["name"], [("a", ["a"])]),
            lambda ws, key: f"detail of {key}",
        )
    ]
'''


def site_with(tmp_path, name: str, source: str):
    """A folder on which plugin `name` (module `name`_plugin) is installed."""
    site = tmp_path / "site"
    dist = site / f"{name}_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[mlops_console]\n{name} = {name}_plugin\n")
    (site / f"{name}_plugin.py").write_text(textwrap.dedent(source))
    return site


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    """`extras` installed in this process; afterwards the plugins are as they were."""
    from mlops_console.tui import areas

    site = site_with(tmp_path_factory.mktemp("extras"), "extras", EXTRAS)
    sys.path.insert(0, str(site))
    invalidate_caches()
    load_plugins.cache_clear()
    for area in list(areas._plugin_areas):  # added by an earlier test: load them afresh
        areas.AREAS.remove(area)
        areas.BY_NAME.pop(area.name, None)
    areas._plugin_areas.clear()
    yield sys.modules.get("extras_plugin") or __import__("extras_plugin")
    sys.path.remove(str(site))
    sys.modules.pop("extras_plugin", None)
    invalidate_caches()
    load_plugins.cache_clear()
    for area in list(areas._plugin_areas):
        areas.AREAS.remove(area)
        areas.BY_NAME.pop(area.name, None)
    areas._plugin_areas.clear()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, extras):
    """One real training run with the example plugin (and extras) installed."""
    from mlops_console.training.runner import train

    root = tmp_path_factory.mktemp("plugins") / "ws"
    ws = Workspace.init(root)
    write_data(root, n=300)
    write_pipeline(root)
    result = train(ws, "kunden")
    yield ws, result
    ws.close()


def test_the_example_plugins_model_check_runs_in_a_training_run(trained):
    ws, result = trained
    checks = {c["name"]: c for c in result.checks}
    builtin = [c["name"] for c in result.checks][: len(checks) - 1]
    assert "signature" in builtin and "max_model_size" not in builtin  # plugins' come after
    size = checks["max_model_size"]
    assert size["passed"] is True and size["measured"]["model_bytes"] > 0
    assert ws.runs.get(result.run_id).metrics["check_max_model_size"] == 1.0


def test_the_example_plugins_notifier_receives_an_event(ws, tmp_path, monkeypatch):
    out = tmp_path / "events.jsonl"
    monkeypatch.setenv("MLOPS_EXAMPLE_EVENTS", str(out))
    outcome = deliver(ws, Event("promoted", "churn v2 is champion", model="churn"), ["jsonl"])
    assert outcome == {"jsonl": "ok"}
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["text"] == "churn v2 is champion"


def test_the_example_plugins_command_runs_and_built_in_commands_do_not_import_plugins():
    assert run_cli("example", "hello", check=True).stdout.startswith("Hello, world")
    probe = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from mlops_console.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['plugins', 'list', '--json'])\n"
        "mods = ['mlops_example', 'mlops_console.deploy.local', 'mlops_console.deploy.docker',"
        " 'mlops_console.monitoring.notifiers']\n"
        "print(json.dumps({'out': json.loads(r.output), 'imported': [m for m in mods if m in sys.modules]}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(proc.stdout)
    assert seen["imported"] == []
    listed = {p["name"]: p for p in seen["out"]["plugins"]}
    assert {"local", "docker", "notifiers", "example"} <= set(listed)
    assert listed["local"]["builtin"] is True and listed["local"]["loaded"] is None
    example = listed["example"]
    assert (example["distribution"], example["version"], example["module"]) == (
        "mlops-example",
        "0.1.0",
        "mlops_example",
    )
    assert set(example["hooks"]) == {
        "mlops_notifiers",
        "mlops_model_checks",
        "mlops_register_commands",
    }


def test_a_plugin_taking_a_built_in_command_is_reported_and_the_built_in_kept(tmp_path):
    site = site_with(
        tmp_path,
        "greedy",
        """
        import click, pluggy
        hookimpl = pluggy.HookimplMarker("mlops_console")

        @hookimpl
        def mlops_register_commands(cli):
            @cli.command("deploy")
            def deploy():
                click.echo("hijacked")
        """,
    )
    env = {"PYTHONPATH": str(site)}
    proc = run_cli("plugins", "list", "--check", "--json", env=env)
    greedy = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}["greedy"]
    assert proc.returncode == 1 and greedy["loaded"] is False
    assert "replace the command 'deploy'" in greedy["error"]
    probe = (
        "from click.testing import CliRunner\n"
        "from mlops_console.cli.main import cli\n"
        "r = CliRunner()\n"
        "assert 'example' in r.invoke(cli, ['--help']).output\n"  # plugins' commands added
        "print(r.invoke(cli, ['deploy', '--help']).output)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert "Usage: cli deploy [OPTIONS] REF" in proc.stdout and "hijacked" not in proc.stdout


def test_a_deploy_target_is_an_abstract_class_with_the_mlflow_verbs():
    class Half(DeployTarget):
        def create(self, name, bundle, config, digest=None):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Half(None)
    assert DeployTarget.__abstractmethods__ == {
        "create",
        "update",
        "delete",
        "list",
        "get",
        "predict",
        "logs",
    }
    targets = load_plugins().deploy_targets()
    assert Capability.CANARY in targets["local"].capabilities
    assert Capability.IMAGE_EXPORT in targets["docker"].capabilities
    assert Capability.IMAGE_EXPORT not in targets["local"].capabilities
    # the daemon keeps local servers running; a container engine restarts its own
    assert Capability.SUPERVISED in targets["local"].capabilities
    assert Capability.SUPERVISED not in targets["docker"].capabilities


def test_a_plugins_target_is_asked_its_capabilities_not_its_name(trained, extras):
    ws, _ = trained
    extras.CALLS.clear()
    rec = ws.deployments.deploy("kunden/1", target="memory", name="mem")
    assert rec.endpoint == "memory://mem" and ("create", "mem") in extras.CALLS
    with pytest.raises(Conflict, match="cannot run a canary"):
        ws.deployments.deploy("kunden/1", target="memory", name="mem", strategy="canary")
    ws.monitor.collect("mem")  # remote_logs: the target brings its segments first
    assert ("fetch", "mem") in extras.CALLS
    with pytest.raises(MlopsError, match="no image to export.*docker"):
        ws.deployments.export("mem", ws.root / "mem.tar")


def test_a_plugins_data_source_reads_a_suffix_the_core_does_not_know(ws, extras):
    (ws.root / "events.ndjson").write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    ws.data.add("events", "events.ndjson")
    version = ws.data.ingest("events").version
    assert version.rows == 2
    (ws.root / "notes.weird").write_text("?")
    with pytest.raises(DataError, match="install a plugin that reads them"):
        ws.data.add("notes", "notes.weird")


def test_a_plugins_console_area_and_compute_backend(extras):
    from mlops_console.tui.areas import AREAS, BY_NAME, add_plugin_areas

    added = add_plugin_areas()
    # (the first-party edge plugin, installed beside, adds its Fleet area too)
    assert [a.name for a in added if a.name != "fleet"] == ["extras"]
    assert BY_NAME["extras"] in AREAS
    assert BY_NAME["extras"].load(None).rows == [("a", ["a"])]
    add_plugin_areas()  # once only
    assert [a.name for a in AREAS].count("extras") == 1
    assert load_plugins().compute_backends()["inline"]({"workers": 2}) == (
        "inline",
        {"workers": 2},
    )


def test_installed_lists_without_importing_and_restricts_third_parties(monkeypatch):
    monkeypatch.setenv("MLOPS_PLUGINS", "none")
    names = {p.name for p in installed()}
    assert {"local", "docker", "notifiers"} <= names and "example" not in names


def test_a_plugins_check_can_gate_a_pipeline(trained, monkeypatch):
    from mlops_console.pipeline_spec import load_pipeline
    from mlops_console.training.runner import train

    ws, _ = trained
    write_pipeline(ws.root, name="sized")
    path = ws.root / "pipelines" / "sized.toml"
    path.write_text(path.read_text().replace('"robustness"]', '"max_model_size"]'))
    assert load_pipeline(path).gates.checks == ["signature", "max_model_size"]
    monkeypatch.setenv("MLOPS_EXAMPLE_MAX_MODEL_BYTES", "10")
    gates = {g["name"]: g for g in train(ws, "sized").gates["results"]}
    assert gates["check max_model_size"]["passed"] is False
    assert "limit 10" in gates["check max_model_size"]["detail"]
    path.write_text(path.read_text().replace('"max_model_size"]', '"max_model_sise"]'))
    with pytest.raises(ConfigError, match="unknown check.*max_model_sise"):
        load_pipeline(path)


# --- [deploy] options: a target's own settings, beside the deployment's ---------------------


def test_deploy_options_cannot_replace_the_deployments_own_settings(trained, extras):
    from mlops_console.pipeline_spec import load_pipeline

    ws, _ = trained
    write_pipeline(ws.root, name="owned")
    path = ws.root / "pipelines" / "owned.toml"
    path.write_text(
        path.read_text() + '[deploy]\ntarget = "local"\noptions = { group = "a", port = 9000 }\n'
    )
    try:
        with pytest.raises(ConfigError, match=r"deploy\.options: option `port`") as err:
            load_pipeline(path)
        said = str(err.value)
        assert "the deployment's own setting" in said and "[serving] port" in said, said
        assert "group" not in said  # a target's setting is welcome
        proc = run_cli("-w", str(ws.root), "run", "owned")  # told before anything trains
        assert proc.returncode == 1 and "option `port`" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        path.unlink()
    # API callers too: nothing starts, nothing is recorded
    with pytest.raises(ConfigError, match=r"option `host`.*\[serving\] host"):
        ws.deployments.deploy(
            "kunden/1", target="memory", name="owned", options={"group": "a", "host": "0.0.0.0"}
        )
    assert ws.deployments.find("owned") is None and ws.deployments.history("owned") == []


def test_changed_options_of_a_deployment_serving_the_version_are_saved(trained, extras):
    from mlops_console.training.runner import train

    ws, _ = trained
    extras.CALLS.clear()
    ws.deployments.deploy("kunden/1", target="memory", name="opts", options={"group": "a"})
    assert extras.CONFIGS["opts"]["group"] == "a"
    ws.deployments.deploy("kunden/1", name="opts", options={"group": "a"})  # the same
    assert [e.action for e in ws.deployments.history("opts")] == ["create"]
    rec = ws.deployments.deploy("kunden/1", name="opts", options={"group": "b", "waves": "1,100%"})
    assert (rec.config["group"], rec.config["waves"]) == ("b", "1,100%")
    assert ws.deployments.get("opts").config == rec.config  # saved
    last = ws.deployments.history("opts")[-1]
    assert (last.action, last.from_version, last.to_version) == ("configure", 1, 1)
    assert "group 'a' -> 'b'" in last.detail and "waves '1,100%' (new)" in last.detail
    assert "the target uses them from its next deploy" in last.detail, last.detail
    assert [c for c in extras.CALLS if c[1] == "opts"] == [("create", "opts")]  # no redeploy
    # the next deploy (a new version, no options given) hands the saved ones to the target
    v2 = train(ws, "kunden").version
    assert v2 is not None
    ws.deployments.deploy(v2.ref, name="opts")
    assert ("update", "opts", "primary") in extras.CALLS
    assert (extras.CONFIGS["opts"]["group"], extras.CONFIGS["opts"]["waves"]) == ("b", "1,100%")


def test_a_chain_whose_deployments_target_was_uninstalled_fails_its_deploy_step(trained, extras):
    """A deployment on `memory` (the extras plugin); then processes without that plugin:
    the chain's deploy step fails with what to do, and the CLI shows the target as
    unavailable, with no traceback anywhere."""
    ws, _ = trained
    write_pipeline(ws.root, name="moved")
    path = ws.root / "pipelines" / "moved.toml"
    path.write_text(path.read_text() + '[deploy]\ntarget = "local"\nauto = true\n')
    ws.deployments.deploy("kunden/1", target="memory", name="moved")
    ws.jobs.submit("chain", "moved", max_attempts=1)
    job = ws.jobs.claim_next()  # as the daemon would; its process has no extras plugin
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mlops_console.automation.chain", str(ws.root), str(job.id)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr
        said = (
            "Deployment 'moved' uses target 'memory', which no installed plugin provides; "
            "install the plugin or redeploy to another target"
        )
        chain, log = ws.jobs.get(job.id), ws.jobs.logs(job.id)
        assert (chain.status, chain.outcome) == ("failed", "error"), log
        assert chain.detail.startswith(said), chain.detail
        (step,) = [s for s in ws.jobs.list(chain_id=job.id) if s.kind == "deploy"]
        assert step.status == "failed" and step.detail == chain.detail
        assert "Traceback" not in log, log
        rec = ws.deployments.get("moved")
        assert (rec.target, rec.version, rec.running) == ("memory", 1, True)  # untouched
        champion = ws.config.registry.champion_alias
        assert champion not in ws.models.resolve("moved/1").aliases  # never deployed

        root = str(ws.root)
        listed = run_cli("-w", root, "deployments", "list")
        assert listed.returncode == 0 and "moved" in listed.stdout, listed.stderr
        shown = run_cli("-w", root, "deployments", "status", "moved", "--json")
        assert shown.returncode == 0, shown.stderr
        live = json.loads(shown.stdout)["live"]
        assert live["status"] == "unavailable" and live["error"].startswith(said), live
        shown = run_cli("-w", root, "deployments", "status", "moved")
        assert shown.returncode == 0 and "unavailable" in shown.stdout, shown.stderr
        for out in (listed, shown):
            assert "Traceback" not in out.stderr
        # what the message says works: redeployed to another target (its server cannot
        # be stopped without the plugin: the move says so in the history)
        moved = run_cli("-w", root, "deploy", "kunden/1", "--name", "moved", "--target", "local")
        assert moved.returncode == 0, moved.stderr
        rec = ws.deployments.get("moved")
        assert (rec.target, rec.running) == ("local", True)
        assert "moved from memory" in ws.deployments.history("moved")[-1].detail
    finally:
        path.unlink()
        if ws.deployments.get("moved").target == "local":
            ws.deployments.stop("moved")


def test_mlops_deploy_takes_a_targets_options_on_the_command_line(trained):
    """`mlops deploy ... -o KEY=VALUE`: the target's settings, typed as TOML values, kept in
    the deployment's config (the fleet target's group, waves, auto_rollback = false)."""
    from mlops_console.cli.deploy import _option_value

    assert _option_value("false") is False and _option_value("3") == 3
    assert _option_value("plant-a") == "plant-a" and _option_value("1,100%") == "1,100%"
    assert _option_value('"x y"') == "x y" and _option_value("[1, 2]") == [1, 2]
    ws, _ = trained
    w = ("-w", str(ws.root))
    bad = run_cli(*w, "deploy", "kunden/1", "--name", "cliopts", "-o", "group")
    assert bad.returncode == 2 and "is not KEY=VALUE" in bad.stderr, bad.stderr
    owned = run_cli(*w, "deploy", "kunden/1", "--name", "cliopts", "-o", "port=9")
    assert owned.returncode == 1 and "option `port`" in owned.stderr, owned.stderr
    assert "Traceback" not in bad.stderr + owned.stderr
    proc = run_cli(
        *w,
        "deploy",
        "kunden/1",
        "--name",
        "cliopts",
        "-o",
        "tier=gold",
        "-o",
        "retries=3",
        "--json",
    )
    try:
        assert proc.returncode == 0, proc.stderr
        config = json.loads(proc.stdout)["config"]
        assert (config["tier"], config["retries"]) == ("gold", 3)
    finally:
        run_cli(*w, "deployments", "stop", "cliopts")
