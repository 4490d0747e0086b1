"""Runs and jobs are searched, sorted and paged in the store (`Area.page`): every row can be
reached however many there are, totals are true, numbers sort as numbers; the Runs table
shows each run's primary metric; the automation actions apply to the rows they can act on."""

import time
import uuid

from mlops_console.tui.areas import BY_NAME
from mlops_console.tui.areas.common import PAGE, Query
from tests.tui.helpers import small_workspace
from tests.unit.test_pipeline import SPEC

RUNS = BY_NAME["runs"]
AUTOMATION = BY_NAME["automation"]


def seed_runs(ws, n, metric=lambda i: (i % 1000) / 100, key="holdout_roc_auc", tags=None):
    """`n` finished runs in four experiments, the oldest first, written in one transaction
    (as `bench/console.py` does, without a transaction per run); their ids, oldest first."""
    now = time.time()
    with ws.db.write() as conn:
        conn.exec_driver_sql(
            "INSERT INTO experiment (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            [(f"exp{i}", now) for i in range(4)],
        )
        exps = dict(conn.exec_driver_sql("SELECT name, id FROM experiment").all())
        ids = [uuid.uuid4().hex for _ in range(n)]
        conn.exec_driver_sql(
            "INSERT INTO run (id, experiment_id, name, status, start_time, user, lineage) "
            "VALUES (?, ?, ?, ?, ?, 'tester', '{}')",
            [
                (
                    rid,
                    exps[f"exp{i % 4}"],
                    f"run-{i}",
                    "FAILED" if i % 10 == 3 else "FINISHED",
                    now - n + i,
                )
                for i, rid in enumerate(ids)
            ],
        )
        values = [(rid, key, metric(i), now) for i, rid in enumerate(ids) if metric(i) is not None]
        conn.exec_driver_sql(
            "INSERT INTO latest_metric (run_id, key, value, step, timestamp) VALUES (?, ?, ?, 0, ?)",
            values,
        )
        for tag, value in (tags or {}).items():
            conn.exec_driver_sql(
                "INSERT INTO tag (run_id, key, value) VALUES (?, ?, ?)",
                [(rid, tag, value) for rid in ids],
            )
    return ids


def every_page(area, ws, **query):
    """All the rows of every page, in order, and the totals each page reported."""
    rows, totals, offset = [], set(), 0
    while True:
        listing = area.page(ws, Query(offset=offset, **query))
        totals.add(listing.total)
        if not listing.rows:
            return rows, totals
        assert len(listing.rows) <= PAGE
        rows += listing.rows
        offset += PAGE


def test_every_run_of_2000_is_reachable_and_the_oldest_is_found_by_its_id(ws):
    ids = seed_runs(ws, 2000)
    first = RUNS.page(ws, Query())
    assert first.total == 2000 and len(first.rows) == PAGE
    assert first.columns == ["run", "experiment", "status", "started", "holdout_roc_auc"]
    assert first.rows[0][0] == ids[-1]  # the newest first
    assert RUNS.load(ws).rows == first.rows and RUNS.load(ws).total == 2000

    found = RUNS.page(ws, Query(text=ids[0]))
    assert found.total == 1 and [k for k, _ in found.rows] == [ids[0]]
    assert RUNS.page(ws, Query(text=ids[0][10:20].upper())).rows[0][0] == ids[0]  # any case

    rows, totals = every_page(RUNS, ws)
    assert totals == {2000} and [k for k, _ in rows] == ids[::-1]
    oldest = RUNS.page(ws, Query(sort="started", descending=False))
    assert oldest.rows[0][0] == ids[0]
    last = RUNS.page(ws, Query(sort="started", offset=1900))
    assert [k for k, _ in last.rows] == ids[1900:]


def test_runs_filter_by_experiment_name_and_status_with_true_totals(ws):
    ids = seed_runs(ws, 2000)
    assert RUNS.page(ws, Query(text="EXP2")).total == 500
    failed = RUNS.page(ws, Query(text="failed", offset=100))
    assert failed.total == 200 and {c[2] for _, c in failed.rows} == {"FAILED"}
    assert RUNS.page(ws, Query(text="run-1999")).rows[0][0] == ids[1999]
    assert RUNS.page(ws, Query(text="100%")).total == 0  # % is a character, not a wildcard
    by_experiment = RUNS.page(ws, Query(sort="experiment", descending=True))
    assert {c[1] for _, c in by_experiment.rows} == {"exp3"}


def test_the_metric_sorts_as_a_number_and_runs_without_it_come_last(ws):
    # 0.85 and 0.9, 9.5 and 12.5, 1e-05: text order would put 12.5 before 9.5, 1e-05 last
    values = [0.9, 0.85, 12.5, 9.5, 1e-05, None, 0.3]
    seed_runs(ws, 2000, metric=lambda i: values[i % len(values)])

    def metric_column(descending):
        rows, totals = every_page(RUNS, ws, sort="holdout_roc_auc", descending=descending)
        assert totals == {2000}
        return [c[4] for _, c in rows]

    up = metric_column(False)
    shown = [float(v) for v in up if v != "-"]
    assert shown == sorted(shown) and "-" not in up[: len(shown)]
    assert up.index("0.9") > up.index("0.85") and up.index("12.5") > up.index("9.5")
    down = metric_column(True)
    shown = [float(v) for v in down if v != "-"]
    assert shown == sorted(shown, reverse=True) and down[0] == "12.5"
    assert down[len(shown) :] == ["-"] * (2000 - len(shown))  # missing: last either way


def test_the_runs_table_shows_each_pipelines_primary_metric(ws):
    """Not the first holdout metrics alphabetically: what the pipeline declares."""
    (ws.root / "pipelines" / "p.toml").write_text(SPEC.format(auto="false", extra=""))
    q = SPEC.replace('name = "p"', 'name = "q"').format(
        auto="false", extra='[validation]\nprimary_metric = "f1"\n'
    )
    (ws.root / "pipelines" / "q.toml").write_text(q)
    for pipeline, roc_auc, f1 in (("p", 0.81, 0.4), ("q", 0.7, 0.66)):
        with ws.runs.start(experiment=pipeline, tags={"pipeline": pipeline}) as run:
            run.log_metrics({"holdout_accuracy": 0.5, "holdout_f1": f1, "holdout_roc_auc": roc_auc})
    mixed = RUNS.page(ws, Query(sort="metric", descending=True))
    assert mixed.columns[-1] == "metric"  # two metrics: each cell says which
    assert [c[4] for _, c in mixed.rows] == ["0.81 roc_auc", "0.66 f1"]
    only_q = RUNS.page(ws, Query(text="q"))
    assert only_q.columns[-1] == "holdout_f1" and only_q.rows[0][1][4] == "0.66"
    detail = RUNS.detail(ws, only_q.rows[0][0])
    assert "Primary metric: holdout_f1 = 0.66 (pipeline q's primary_metric)" in detail


def test_a_trained_pipelines_runs_show_its_primary_metric(ws):
    small_workspace(ws, versions=1, job=False)
    run = ws.runs.search()[0]
    listing = RUNS.load(ws)
    assert listing.columns[-1] == "holdout_roc_auc" and listing.total == 1
    assert listing.rows[0][1][4] == f"{run.metrics['holdout_roc_auc']:.4g}"


def seed_jobs(ws, n):
    """`n` chains and score jobs (every fifth one a score job) over five pipelines and every
    status, each chain with a train step, in one transaction."""
    statuses = ["queued", "running", "succeeded", "failed", "cancelled"]
    now = time.time()
    jobs = [
        (
            "score" if i % 5 == 0 else "chain",
            f"p{i % 5}",
            statuses[i % 7 % 5],
            "schedule" if i % 2 else "watch",
            f"job number {i}",
            now - n + i,
        )
        for i in range(n)
    ]
    sql = (
        "INSERT INTO job (kind, pipeline, status, trigger, attempt, max_attempts, "
        "cancel_requested, detail, result, log_path, created_at) "
        "VALUES (?, ?, ?, ?, 1, 1, 0, ?, '{}', '', ?)"
    )
    with ws.db.write() as conn:
        conn.exec_driver_sql(sql, jobs)
        conn.exec_driver_sql(sql, [("train", "p0", "succeeded", "", "a step", now)] * 300)
    return jobs


def test_5000_jobs_filter_by_status_sort_by_id_both_ways_with_true_totals(ws):
    jobs = seed_jobs(ws, 5000)
    first = AUTOMATION.page(ws, Query())
    assert first.total == 5000 and len(first.rows) == PAGE  # the train steps are no rows
    assert first.rows[0][0] == "5000"  # the newest first
    assert AUTOMATION.load(ws).rows == first.rows

    rows, totals = every_page(AUTOMATION, ws, sort="job", descending=False)
    assert totals == {5000} and [int(k) for k, _ in rows] == list(range(1, 5001))
    down = AUTOMATION.page(ws, Query(sort="job", descending=True, offset=4900))
    assert [int(k) for k, _ in down.rows] == list(range(100, 0, -1))  # numbers, not "999" > "1000"

    failed = sum(1 for j in jobs if j[2] == "failed")
    page = AUTOMATION.page(ws, Query(text="FAILED", offset=PAGE))
    assert page.total == failed and {c[2] for _, c in page.rows} == {"failed"}
    by_id = AUTOMATION.page(ws, Query(text="4242"))  # job 4243 is "job number 4242"
    assert [k for k, _ in by_id.rows] == ["4242", "4243"] and by_id.total == 2
    assert AUTOMATION.page(ws, Query(text="p3")).total == 1000
    created = AUTOMATION.page(ws, Query(sort="created", descending=False))
    assert created.rows[0][0] == "1"
    assert AUTOMATION.page(ws, Query(text="nothing like it")).total == 0


def test_automation_actions_apply_to_their_rows_and_ask_in_the_users_words(ws):
    job = ws.jobs.submit("chain", "churn")
    actions = {a.name: a for a in AUTOMATION.actions}
    pause, resume = actions["schedule: pause"], actions["schedule: resume"]
    cancel, run_now = actions["job: cancel"], actions["job: run now"]
    watcher, schedule = "schedule:watch-churn", "schedule:churn:interval"
    assert not pause.applies(watcher) and not resume.applies(watcher)
    assert not run_now.applies(watcher) and not cancel.applies(watcher)
    assert pause.applies(schedule) and run_now.applies(schedule) and not cancel.applies(schedule)
    assert pause.applies("schedule:watch-x:interval")  # a pipeline called watch-x is no watcher
    assert cancel.applies(str(job.id)) and run_now.applies(str(job.id))
    assert not pause.applies(str(job.id))
    assert cancel.confirm(ws, str(job.id)) == f"Cancel job {job.id} (chain of churn, queued)?"
    assert pause.confirm(ws, schedule) == "Pause schedule churn:interval?"
    assert run_now.confirm(ws, schedule) == "Run schedule churn:interval now?"
    assert "new chain of churn" in run_now.confirm(ws, str(job.id))
    assert "cannot be paused" in AUTOMATION.detail(ws, watcher)
