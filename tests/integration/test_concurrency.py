"""Several real processes share one workspace: nothing lost, no "database is locked"."""

import subprocess
import sys
import textwrap
import time

from mlops_console.workspace import Workspace

WORKER = textwrap.dedent(
    """
    import sys, time
    from mlops_console.workspace import Workspace
    root, worker, start_at, runs, metrics = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    while time.time() < start_at:
        time.sleep(0.001)
    ws = Workspace.open(root)          # all workers race to create and migrate the store
    for i in range(runs):
        with ws.runs.start(experiment="race", params={"worker": worker, "i": i}) as run:
            for step in range(metrics):
                run.log_metric("loss", 1.0 / (step + 1))
                if step % 10 == 0:
                    run.flush()        # many small write transactions, interleaved
            run.log_artifact(f"{worker}-{i}".encode(), "model")
        mv = ws.models.register("shared", run=run)
        ws.models.promote(mv.ref, reason=f"worker {worker}")
    ws.close()
    print("ok", worker)
    """
)


def test_processes_logging_at_once_lose_nothing(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mlops.toml").write_text("")  # no .mlops yet: the first open creates it
    n_workers, runs, metrics = 4, 8, 40
    start_at = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(root),
                str(w),
                str(start_at),
                str(runs),
                str(metrics),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n_workers)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert out.startswith("ok"), err
        assert p.returncode == 0, err
        assert "locked" not in err
    ws = Workspace.open(root)
    with ws.db.read() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM run WHERE status='FINISHED'").scalar()
            == n_workers * runs
        )
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM metric").scalar()
            == n_workers * runs * metrics
        )
        assert conn.exec_driver_sql("SELECT count(*) FROM param").scalar() == n_workers * runs * 2
        versions = [
            r[0] for r in conn.exec_driver_sql("SELECT version FROM model_version ORDER BY version")
        ]
        assert conn.exec_driver_sql("SELECT count(*) FROM alias_event").scalar() == n_workers * runs
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert versions == list(range(1, n_workers * runs + 1))
    champion = ws.models.resolve("shared@champion")
    assert champion.version == ws.models.history("shared", "champion")[-1].to_version
    ws.close()


def test_concurrent_first_open_migrates_once(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mlops.toml").write_text("")
    start_at = time.time() + 1.0
    code = (
        "import sys,time\n"
        "from mlops_console.workspace import Workspace\n"
        f"while time.time() < {start_at}: time.sleep(0.001)\n"
        "Workspace.open(sys.argv[1]).close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    with Workspace.open(root) as ws, ws.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


READER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from mlops_console.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    deadline = time.time() + float(sys.argv[2])
    n = 0
    ent = pd.DataFrame({"eid": ["C001", "C002"], "event_timestamp": pd.to_datetime(["2025-06-01", "2025-06-02"])})
    while time.time() < deadline:
        with ws.runs.start(experiment="train") as run:
            frame = ws.data.read("sales", run=run)           # what training reads
            out = ws.features.training_frame(ent, ["sales_fv:amount"], run=run)
            assert len(frame) >= 100 and len(out) == 2
            run.log_metric("rows", len(frame))
        n += 1
    print("reads", n)
    """
)


def test_ingesting_while_another_process_trains(tmp_path):
    root = tmp_path / "ws"
    ws = Workspace.init(root)
    header = "eid,ts,amount\n"

    def body(k):
        return header + "".join(
            f"C{i:03d},2025-0{1 + i % 9}-01T00:00:00,{i + k / 1000}\n" for i in range(100 + k % 20)
        )

    (root / "data" / "sales.csv").write_text(body(1))
    ws.data.add("sales", "data/sales.csv", timestamp="ts", entities=["eid"])
    ws.data.ingest("sales")
    (root / "features" / "sales_fv.toml").write_text(
        'entities = ["eid"]\ntimestamp = "ts"\nsource = "sales"\nfeatures = ["amount"]\n'
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(root), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    versions = 1
    deadline = time.time() + 7
    k = 2
    while time.time() < deadline:
        (root / "data" / "sales.csv").write_text(body(k))
        assert ws.data.ingest("sales").version.status == "accepted"
        ws.features.materialize()
        versions += 1
        k += 1
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert "locked" not in err.lower()
    assert int(out.split()[-1]) > 3 and versions > 3
    assert [v.version for v in ws.data.versions("sales")] == list(range(1, versions + 1))
    ws.close()
