"""The loop driven from the console's areas, on one real workspace: ingest (accepted, and
quarantined with its report), train with an override, test a version, a first deploy as a
real local server, a label import, the lineage of the deployed model, the loud note when
the champion is not what serves, and the confirmation questions in the user's words."""

from __future__ import annotations

import time

import httpx
import pytest

from mlops_console.automation.jobs import Outcome
from mlops_console.errors import Conflict, MlopsError
from mlops_console.tui.areas import BY_NAME, data, deployments, lineage, models, monitoring
from mlops_console.tui.areas.common import Action
from mlops_console.workspace import Workspace
from tests.integration.serving_helpers import free_port
from tests.tui.helpers import small_workspace
from tests.unit.test_pipeline import make_data

RULES = """
[monitoring]
min_rows = 1

[[alerts]]
name = "slow"
measure = "latency_p99_ms"
above = 0.0
window = "1h"
notify = ["console"]
"""


def action(area, name: str) -> Action:
    return next(a for a in area.AREA.actions if a.name == name)


@pytest.fixture(scope="module")
def lws(tmp_path_factory):
    from mlops_console.plugins import load_plugins

    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_PLUGINS", "none")  # the built-in checks and targets only
    load_plugins.cache_clear()
    root = tmp_path_factory.mktemp("loop") / "ws"
    ws = Workspace.init(root)
    config = (root / "mlops.toml").read_text().replace("port = 8080", f"port = {free_port()}")
    (root / "mlops.toml").write_text(config + RULES)
    ws.close()
    ws = small_workspace(Workspace.open(root))
    try:
        yield ws
    finally:
        for d in ws.deployments.list():
            if d.running:
                ws.deployments.stop(d.name)
        ws.close()
        mp.undo()
        load_plugins.cache_clear()


def test_ingest_accepts_a_good_file_and_quarantines_a_broken_one(lws):
    ingest = action(data, "data: ingest")
    assert ingest.progress and not ingest.destructive
    assert ingest.applies is not None
    assert ingest.applies("d/1") and not ingest.applies("view:customer")
    make_data(800, seed=1).to_parquet(lws.root / "data" / "d.parquet")
    lines: list[str] = []
    said = ingest.run(lws, "d/1", progress=lines.append)
    assert said.startswith("d v2: 800 rows accepted"), said
    assert any("check the data contract" in line for line in lines), lines

    broken = make_data(800, seed=2)
    broken["x1"] += 100  # far outside the contract's range
    broken.to_parquet(lws.root / "data" / "d.parquet")
    said = ingest.run(lws, "d/2", progress=lines.append)
    assert said.startswith("d v3 QUARANTINED: 1 contract rule(s) fail"), said
    assert "(x1)" in said and "kept in quarantine" in said and "v2 stays current" in said
    dv = lws.data.version("d", 3)
    assert dv.status == "quarantined" and f".mlops/lake/{dv.lake_path}" in said
    assert (lws.state / "lake" / dv.lake_path).is_file()  # the snapshot is kept
    assert lws.data.get("d").current_version == 2
    # the same files again: still a result, no new version
    again = ingest.run(lws, "d/3")
    assert "QUARANTINED" in again and len(lws.data.versions("d")) == 3


def test_train_with_an_override_and_the_mistakes_a_user_can_make(lws):
    train = action(data, "data: train")
    assert train.progress and train.ask and train.confirm is not None
    assert (
        train.confirm(lws, "d/1", "p model.params.C=0.25")
        == "Train pipeline p with model.params.C=0.25? It registers a new version of m."
    )
    lines: list[str] = []
    said = train.run(lws, "d/1", "p model.params.C=0.25", progress=lines.append)
    assert "registered m/3" in said, said
    assert lines and all(line.startswith("p: ") for line in lines), lines
    mv = lws.models.get_version("m", 3)
    run = lws.runs.get(mv.run_id)
    assert run.params["model.C"] == "0.25" and said.startswith(f"run {run.id[:8]} of p in ")
    assert f"holdout_roc_auc {mv.metrics['holdout_roc_auc']:.4g};" in said
    assert run.inputs[0]["version"] == "v2"  # the current version, not the quarantined v3

    with pytest.raises(MlopsError, match="No pipeline 'nope'.*known: p"):
        train.run(lws, "d/1", "nope")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        train.run(lws, "d/1", "p model.params.C")
    with pytest.raises(ValueError, match="pipeline first.*pipelines: p"):
        train.run(lws, "d/1", "model.params.C=1")
    with pytest.raises(MlopsError, match="'nosuch' is not a section"):
        train.confirm(lws, "d/1", "p nosuch.x=1")
    assert len(lws.models.versions("m")) == 3  # none of the mistakes trained anything


def test_test_runs_the_checks_and_gates_again_on_a_version(lws):
    test = action(models, "model: test")
    assert test.progress and not test.destructive
    lines: list[str] = []
    said = test.run(lws, "m/1", progress=lines.append)
    assert said.startswith("m/1: gates pass; checks "), said
    assert "model checks" in lines
    with pytest.raises(MlopsError, match="9"):
        test.run(lws, "m/9")


@pytest.fixture(scope="module")
def served(lws):
    """m/3 (the challenger trained above) made champion, then deployed for the first time
    from the Models area."""
    promote = action(models, "model: promote")
    assert promote.confirm(lws, "m/3") == "Make m v3 m@champion (it has no champion yet)?"
    promote.run(lws, "m/3")
    deploy = action(models, "model: deploy")
    assert deploy.confirm(lws, "m/3", "-") == "Start deployment m serving m/3 on the local target?"
    said = deploy.run(lws, "m/3", "-")
    rec = lws.deployments.get("m")
    assert said == f"m: m v3 serving at {rec.endpoint} (local)"
    return rec


def test_a_first_deploy_is_a_real_local_server(lws, served):
    assert served.target == "local" and served.running and served.version == 3
    part = make_data(3, seed=4)[["x1", "x2", "plan"]]
    r = httpx.post(
        served.endpoint + "/invocations",
        json={"dataframe_records": part.to_dict("records")},
        headers={"x-request-id": "req-1"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-model-version"] == "3"
    deploy = action(models, "model: deploy")
    with pytest.raises(Conflict, match="serves m v3.*Deployments area"):
        deploy.run(lws, "m/2", "m")  # not a hot-swap by accident
    with pytest.raises(ValueError, match="no deploy target 'nowhere'.*local"):
        deploy.confirm(lws, "m/2", "m2 nowhere")
    with pytest.raises(ValueError, match="deployment name and a target"):
        deploy.run(lws, "m/2", "a b c")


def test_labels_are_imported_for_the_selected_deployment(lws, served):
    labels = action(monitoring, "labels: import")
    assert labels.applies is not None
    assert labels.applies("dep:m") and not labels.applies("alert:1")
    deadline = time.time() + 20
    while time.time() < deadline:  # the server writes its log off the request path
        lws.monitor.collect("m")
        rows, _, _ = lws.monitor.frames("m", 0, time.time() + 1)
        if rows is not None and (rows["request_id"] == "req-1").sum() == 3:
            break
        time.sleep(0.3)
    (lws.root / "data" / "labels.csv").write_text(
        "request_id,row,label\nreq-1,0,1\nreq-1,1,0\nreq-1,2,1\nnot-yet,0,1\n,0,1\n"
    )
    assert (
        labels.confirm(lws, "dep:m", "data/labels.csv")
        == "Import the labels in data/labels.csv for deployment m?"
    )
    said = labels.run(lws, "dep:m", "data/labels.csv")
    assert said.startswith("m: 4 of 5 labels accepted (3 match a prediction), 1 not matched yet"), (
        said
    )
    assert "1 rejected" in said and "Rejected rows, with their reasons:" in said
    with pytest.raises(MlopsError, match="No labels file data/nope.csv in the workspace"):
        labels.run(lws, "dep:m", "data/nope.csv")


def test_a_retrained_champion_that_does_not_serve_is_loud_and_questions_are_plain(lws, served):
    dep_deploy = action(deployments, "deployment: deploy")
    dep_promote = action(deployments, "deployment: promote")
    dep_rollback = action(deployments, "deployment: rollback")
    with pytest.raises(ValueError, match="'lots' is not a canary percent"):
        dep_deploy.run(lws, "m", "m/2 lots")
    with pytest.raises(Conflict, match="no canary to promote"):
        dep_promote.confirm(lws, "m")
    with pytest.raises(Conflict, match="no earlier version"):
        dep_rollback.confirm(lws, "m")
    assert (
        action(deployments, "deployment: stop").confirm(lws, "m")
        == "Stop deployment m (serving m v3)? It stops answering requests."
    )
    assert "NOT SERVING" not in str(deployments.AREA.load(lws).rows)  # v3 is champion

    # a retrain: m/4 becomes champion while the deployment keeps serving v3
    said = action(data, "data: train").run(lws, "d/2", "p")
    assert "registered m/4 as @challenger" in said, said
    promote = action(models, "model: promote")
    assert promote.confirm(lws, "m/4") == "Move m@champion from v3 to v4?"
    promote.run(lws, "m/4")
    listing = deployments.AREA.load(lws)
    status = dict(listing.rows)["m"][listing.columns.index("status")]
    assert status == "running [red]NOT SERVING CHAMPION: champion is v4, serving v3[/]"
    assert "[red]NOT SERVING CHAMPION: champion is v4, serving v3[/]" in (
        deployments.AREA.detail(lws, "m")
    )

    assert (
        dep_deploy.confirm(lws, "m", "m@champion 20")
        == "Start m v4 as a canary of deployment m at 20% of its traffic (v3 keeps the rest)?"
    )
    dep_deploy.run(lws, "m", "m@champion 20")  # the champion on its way: no longer loud
    assert dict(deployments.AREA.load(lws).rows)["m"][4] == (
        "running [yellow]champion v4 is the canary[/]"
    )
    assert (
        dep_promote.confirm(lws, "m")
        == "Promote canary v4 of deployment m to 100%? v3 stops serving."
    )
    assert (
        dep_rollback.confirm(lws, "m")
        == "Drop canary v4 of deployment m? v3 serves all its traffic again."
    )
    dep_rollback.run(lws, "m")
    assert "NOT SERVING CHAMPION" in dict(deployments.AREA.load(lws).rows)["m"][4]

    assert promote.confirm(lws, "m/3") == "Move m@champion from v4 to v3?"
    assert (
        promote.confirm(lws, "m/4")
        == "m@champion is v4 already; promote it again (nothing changes)?"
    )
    assert (
        action(models, "model: rollback").confirm(lws, "m/1")
        == "Move m@champion back from v4 to v3?"
    )
    archive = action(models, "model: archive")
    assert archive.confirm(lws, "m/1").startswith("Archive m v1? ")
    with pytest.raises(Conflict, match="m/4 is still @"):
        archive.confirm(lws, "m/4")
    assert models.AREA.detail_markdown


def test_lineage_rows_and_timeline_of_the_deployed_model(lws, served):
    assert list(BY_NAME).index("lineage") == list(BY_NAME).index("monitoring") + 1
    opened = lws.alerts.evaluate(["m"])
    assert [c["state"] for c in opened] == ["open"]
    chain = lws.jobs.list()[-1]  # the chain small_workspace queued: it stands for the retrain
    lws.jobs.finish(chain.id, Outcome.SUCCEEDED, "chain done", {"version": "m/4"})

    listing = lineage.AREA.load(lws)
    rows = dict(listing.rows)
    assert set(rows) == {"dep:m"}
    run3 = lws.models.get_version("m", 3).run_id
    assert rows["dep:m"] == [
        "m",
        "d v2",
        run3[:8],
        "m v3",
        "m running [red]NOT SERVING CHAMPION: champion is v4, serving v3[/]",
        "[red]1 open[/] of 1",
        f"chain {chain.id} -> v4",
    ]

    events = lineage.timeline(lws, "dep:m")
    assert [e.at for e in events] == sorted(e.at for e in events)
    texts = [e.text for e in events]

    def first(prefix: str) -> int:
        return next(i for i, t in enumerate(texts) if t.startswith(prefix))

    assert first("ingest d v2: accepted") < first(f"run {run3[:8]}") < first("registered m/3")
    assert first("registered m/3") < first("m@champion v- -> v3") < first("m: create")
    assert first("m: create") < first("m@champion v3 -> v4") < first("alert #")
    assert texts[first("ingest d v3")].startswith("ingest d v3: quarantined, 800 rows (")
    assert first(f"chain {chain.id} queued") < first(f"chain {chain.id} succeeded, registered m/4")
    assert {e.kind for e in events} == {
        "ingest",
        "run",
        "register",
        "alias",
        "deploy",
        "alert",
        "chain",
    }
    detail = lineage.AREA.detail(lws, "dep:m")
    assert detail.startswith(f"Deployment m: {len(events)} events, oldest first")
