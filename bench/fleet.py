"""Edge-fleet rollouts over real links: what a new version costs on the wire, what a link
cut costs, how fast a bad version is undone, a shared lossy plant link, controller cost.

    .venv/bin/python bench/fleet.py                         # every part (~20 min, root)
    .venv/bin/python bench/fleet.py --part delta,cut,rollback,scale
    .venv/bin/python bench/fleet.py --part shared --quick   # 10 devices, 10 s soak

Devices are real sshd's in network namespaces (plugins/mlops-edge-ssh/tests/netdevices.py),
links shaped with tc/iptables; nothing is mocked. Models: m/1 and m/2 are random forests
(same data, different seeds/trees: every model file changes) of ~6 MB of model.joblib +
model.onnx; m/3 is trained on inverted labels (bad; golden rows are recorded from m/1);
s/1 is a small logistic regression. Parts (`--part`, comma-separated; default all):

delta     a device holding m/1 gets m/2: wire bytes (payload of the chunks sent, zstd-3
          per 1 MiB chunk; SSH framing not counted) vs (a) 1.1x the zstd-3 size of the
          bundle files whose sha256 changed, (b) the full bundle with its runtime (runtime
          layer tar + all bundle files, raw), (c) `docker save IMAGE | ssh docker load` of
          the serving image (docker_runtime.edge_image save size; needs the host engine,
          started with packaging/docker/engine.sh, else not measured).
cut       two devices at 40 Mbit/s get runtime + m/1; one link is cut for 25 s after ~30%
          of its bytes. Re-sent = wire bytes of the cut device - the uncut one. Target:
          <= one chunk (1 MiB).
rollback  5 devices on m/1; m/3 (fails the golden rows) in waves 1,100%: detail rollback_s
          of the failed device and wall time from its failure to m/1 serving again; then
          m/2 to all 5 and a timed `mlops fleet rollback` of the whole fleet (objects dirs
          compared before/after: nothing sent).
shared    20 devices behind ONE 2 Mbit/s link with 10% loss; seeded with the runtime
          (+ s/1) with the link unshaped, then m/1 (~6 MB) in waves of 1, 4 and 15
          devices, 60 s soak. End-to-end seconds vs the 15-minute target.
          --quick: 10 devices (waves 1,4,5), 10 s soak.
scale     the controller in a child process (its rusage: peak RSS, user+system CPU) for a
          rollout of s/1 to 10, 25, 50 devices whose runtime is already extracted; a linear
          fit extrapolated to 1,000 devices.

Prints a table at the end and writes it to bench/fleet_results.md (with --part, the rows
of the parts not run are kept from the previous file). MB = 1e6 bytes, MiB = 2**20.
No assertions on timings: the box is shared, the load average is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as pyplatform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ROOT / "plugins" / "mlops-edge-ssh" / "tests"
sys.path.insert(0, str(TESTS))
RESULTS = HERE / "fleet_results.md"
PARTS = ("delta", "cut", "rollback", "shared", "scale")
MiB = 1 << 20
CHUNK = 1 << 20

RF_PARAMS = "{{ n_estimators = {n}, max_depth = 14, min_samples_leaf = 1 }}"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# --------------------------------------------------------------------------- workspace


def build_workspace(root: Path, trees: int, rows: int) -> dict:
    """m/1, m/2 (good random forests), m/3 (inverted labels), s/1 (small); golden from
    m/1. Returns the sizes of the bundles."""
    import fleetdata

    from mlops_console.workspace import Workspace

    t0 = time.monotonic()
    rf = RF_PARAMS.format(n=trees)
    fleetdata.train_workspace(
        root,
        {
            "d": fleetdata.frame(0, rows, freq="min"),
            "dbad": fleetdata.frame(0, rows, invert=True, freq="min"),
        },
        [
            ("p1", "m", "d", 7, fleetdata.RF, rf),
            ("p2", "m", "d", 8, fleetdata.RF, rf),
            ("pbad", "m", "dbad", 7, fleetdata.RF, rf),
            ("ps", "s", "d", 7, fleetdata.LR, fleetdata.lr(1.0)),
        ],
        golden="m/1",
    )
    ws = Workspace.open(root)
    try:
        sizes = {}
        for ref in ("m/1", "m/2", "s/1"):
            files = bundle_files(ws, ref)
            sizes[ref] = {k: v["size"] for k, v in files.items()}
    finally:
        ws.close()
    say(f"workspace trained in {time.monotonic() - t0:.1f}s: " + json.dumps(sizes["m/1"]))
    return sizes


def bundle_files(ws, ref: str) -> dict:
    mv = ws.models.resolve(ref)
    manifest = json.loads(ws.artifacts.get_bytes(mv.artifact_hash))
    out = {}
    for name, meta in manifest["files"].items():
        path = ws.artifacts.verify(meta["sha256"])
        out[name] = {"sha256": meta["sha256"], "size": path.stat().st_size, "path": path}
    return out


def copy_ws(template: Path, dest: Path, lab, **defaults):
    from mlops_console.workspace import Workspace

    shutil.copytree(template, dest, symlinks=True)
    (dest / "fleet.toml").write_text(lab.fleet_toml(**defaults))
    return Workspace.open(dest)


def rollout(ws, ref: str, **opts):
    from mlops_edge_ssh.service import FleetService

    opts.setdefault("soak", 0)
    opts.setdefault("waves", "100%")
    with FleetService(ws) as svc:
        rid = svc.start(svc.plan(ref, **opts))
        return svc.run(rid)


def serving(dev_root: Path) -> str | None:
    link = dev_root / "current"
    if not link.is_symlink():
        return None
    state = json.loads((dev_root / "run" / "server.json").read_text())
    alive = Path(f"/proc/{state['pid']}").exists()
    return os.readlink(link).split("/")[-1] if alive else "dead"


def vid(ws, ref: str) -> str:
    mv = ws.models.resolve(ref)
    return f"{mv.name}-{mv.version}-{mv.artifact_hash[:12]}"


def host_platform():
    from mlops_edge_ssh import layers

    _libc, ver = pyplatform.libc_ver()
    return layers.Platform.parse(
        pyplatform.machine(), f"{sys.version_info[0]}.{sys.version_info[1]}", f"glibc {ver}"
    )


def runtime_layer():
    from mlops_edge_ssh import layers

    # the process runtime's layers (dependencies, console); .size is both
    return layers.process_runtime(host_platform(), progress=lambda m: say(f"  layer: {m}"))


def zstd3(path: Path) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=3).compress(Path(path).read_bytes()))


@contextlib.contextmanager
def lab_of(base: Path, n: int, **kw):
    import netdevices

    lab = netdevices.DeviceLab(base, n, **kw)
    try:
        t0 = time.monotonic()
        lab.start()
        say(f"lab of {n} device(s) up in {time.monotonic() - t0:.1f}s")
        yield lab
    finally:
        lab.stop()


def wait_for(cond, timeout: float, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    return None


# --------------------------------------------------------------------------- parts


def part_delta(tmpl: Path, tmp: Path, rows: list) -> None:
    with lab_of(tmp / "lab-delta", 1) as lab:
        ws = copy_ws(tmpl, tmp / "ws-delta", lab)
        try:
            r1 = rollout(ws, "m/1")
            first = r1.devices[0].detail["transfer"]
            t0 = time.monotonic()
            r2 = rollout(ws, "m/2")
            t_delta = time.monotonic() - t0
            d2 = r2.devices[0]
            assert d2.state == "healthy", r2.to_dict()
            delta = d2.detail["transfer"]
            ok = serving(lab.devices[0].root) == vid(ws, "m/2")
            f1, f2 = bundle_files(ws, "m/1"), bundle_files(ws, "m/2")
            old = {v["sha256"] for v in f1.values()}
            changed = {k: v for k, v in f2.items() if v["sha256"] not in old}
            z_changed = sum(zstd3(v["path"]) for v in changed.values())
            layer = runtime_layer()
            full = layer.size + sum(v["size"] for v in f2.values())
        finally:
            ws.close()
    wire = delta["wire_bytes"]
    say(
        f"delta: m/1 first send {fmt_bytes(first['wire_bytes'])} wire "
        f"({first['sent_objects']} objects); m/2 {fmt_bytes(wire)} wire, "
        f"{delta['sent_objects']}/{delta['objects']} objects, rollout {t_delta:.1f}s, "
        f"serving m/2: {ok}"
    )
    say(
        f"  changed files {sorted(changed)}: raw {fmt_bytes(sum(v['size'] for v in changed.values()))}"
        f", zstd-3 {fmt_bytes(z_changed)}, 1.1x = {fmt_bytes(1.1 * z_changed)}"
    )
    rows.append(
        ("delta", "m/2 to a device with m/1: wire bytes", fmt_bytes(wire),
         f"{len(changed)} of {len(f2)} bundle files changed ({fmt_bytes(sum(v['size'] for v in f2.values()))} bundle)")
    )  # fmt: skip
    rows.append(
        ("delta", "(a) vs 1.1x zstd-3 of changed files", f"{wire / (1.1 * z_changed):.3f}x",
         f"{fmt_bytes(wire)} / {fmt_bytes(1.1 * z_changed)}; target <= 1.0x")
    )  # fmt: skip
    rows.append(
        ("delta", "(b) vs full bundle + runtime (raw)", f"{wire / full:.4f}x ({full / wire:.0f}x less)",
         f"runtime tar {fmt_bytes(layer.size)} + bundle files; first send was {fmt_bytes(first['wire_bytes'])} wire")
    )  # fmt: skip
    # a new mlops-console on the controller: only its own layer travels (computed, zstd-3)
    z_console, z_deps = zstd3(layer.console.path), zstd3(layer.deps.path)
    rows.append(
        ("delta", "(d) a new mlops-console: its layer alone", f"{fmt_bytes(z_console)} zstd-3",
         f"console layer {fmt_bytes(layer.console.size)} raw; the dependencies layer "
         f"({fmt_bytes(layer.deps.size)} raw, {fmt_bytes(z_deps)} zstd-3) stays on the device")
    )  # fmt: skip
    image = docker_image_size()
    if isinstance(image, int):
        rows.append(
            ("delta", "(c) vs docker save, ssh, docker load", f"{wire / image:.4f}x ({image / wire:.0f}x less)",
             f"edge image save {fmt_bytes(image)}")
        )  # fmt: skip
    else:
        rows.append(("delta", "(c) vs docker save, ssh, docker load", "not measured", image))


def docker_image_size() -> int | str:
    try:
        cp = subprocess.run(
            ["bash", str(ROOT / "packaging" / "docker" / "engine.sh"), "start"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if cp.returncode != 0:
            return f"no host engine: {(cp.stderr or cp.stdout).strip()[-200:]}"
        from mlops_edge_ssh import docker_runtime as dr

        t0 = time.monotonic()
        image = dr.edge_image(host_platform(), progress=lambda m: say(f"  image: {m}"))
        say(f"  edge image {image.ref}: {fmt_bytes(image.size)} ({time.monotonic() - t0:.1f}s)")
        return image.size
    except Exception as e:  # report, do not fail the other parts
        return f"not measured: {type(e).__name__}: {str(e)[:200]}"


def part_cut(tmpl: Path, tmp: Path, rows: list) -> None:
    from mlops_console.workspace import Workspace
    from mlops_edge_ssh.service import FleetService

    with lab_of(tmp / "lab-cut", 2) as lab:
        ws = copy_ws(tmpl, tmp / "ws-cut", lab)
        try:
            for d in lab.devices:
                d.limit_rate(40_000)
            result: dict = {}

            def run() -> None:
                try:
                    with Workspace.open(ws.root) as w:
                        result["r"] = rollout(w, "m/1")
                except BaseException as e:
                    result["error"] = e

            def state():
                with FleetService(ws) as svc:
                    r = svc.store.active() or svc.store.rollout()
                    return next((d for d in r.devices if d.device == "gw-02"), None) if r else None

            t = threading.Thread(target=run)
            t.start()
            s = wait_for(
                lambda: (s := state()) and s.state == "sending" and (s.progress or 0) >= 0.30
                and s, 300,
            )  # fmt: skip
            cut = lab.devices[1]
            at = s.progress if s else None
            cut.link_down()
            say(f"cut: gw-02 link down at progress {at}")
            time.sleep(25)
            cut.link_up()
            say("cut: link up")
            t.join(900)
            if "error" in result:
                raise result["error"]
            r = result["r"]
            by = {d.device: d for d in r.devices}
            clean = by["gw-01"].detail["transfer"]
            cutd = by["gw-02"].detail["transfer"]
            ok = serving(cut.root) == vid(ws, "m/1")
        finally:
            ws.close()
    resent = cutd["wire_bytes"] - clean["wire_bytes"]
    say(
        f"cut: uncut {clean['wire_bytes']} B, cut {cutd['wire_bytes']} B, re-sent {resent} B "
        f"({resent / CHUNK:.2f} chunk), chunks reused {cutd['chunks_reused']}, states "
        f"{r.counts()}, cut device serving m/1: {ok}"
    )
    rows.append(
        ("cut", "25 s cut at ~30%: re-sent bytes", f"{resent} B ({resent / CHUNK:.2f} MiB chunk)",
         f"cut at progress {at:.2f}; uncut {fmt_bytes(clean['wire_bytes'])}, cut "
         f"{fmt_bytes(cutd['wire_bytes'])}; {cutd['chunks_reused']} chunk(s) reused; target <= 1 chunk")
    )  # fmt: skip


def part_rollback(tmpl: Path, tmp: Path, rows: list) -> None:
    from mlops_edge_ssh.service import FleetService

    with lab_of(tmp / "lab-rb", 5) as lab:
        ws = copy_ws(tmpl, tmp / "ws-rb", lab)
        try:
            r = rollout(ws, "m/1")
            assert r.counts() == {"healthy": 5}, r.to_dict()
            r = rollout(ws, "m/3", waves="1,100%", max_failed="10%", soak=0.5)
            first = r.devices[0]
            rb_s = first.detail.get("rollback_s")
            with FleetService(ws) as svc:
                ev = svc.events(r.id, first.device)
            failed_at = next((e for e in ev if e["kind"] == "failed"), None) if ev else None
            back = serving(lab.devices[0].root) == vid(ws, "m/1")
            say(
                f"rollback: m/3 rollout {r.state}, {first.device} {first.state}, "
                f"gate step {first.detail.get('gate', {}).get('step')}, rollback_s {rb_s}, "
                f"back on m/1: {back}"
            )
            r2 = rollout(ws, "m/2")
            assert r2.counts() == {"healthy": 5}, r2.to_dict()
            before = {d.name: sorted(os.listdir(d.root / "objects")) for d in lab.devices}
            t0 = time.monotonic()
            cp = subprocess.run(
                [sys.executable, "-m", "mlops_console.cli.main", "-w", str(ws.root), "fleet",
                 "rollback", "--json"], capture_output=True, text=True, timeout=600,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            wall = time.monotonic() - t0
            res = json.loads(cp.stdout)["devices"]
            after = {d.name: sorted(os.listdir(d.root / "objects")) for d in lab.devices}
            on1 = sum(serving(d.root) == vid(ws, "m/1") for d in lab.devices)
        finally:
            ws.close()
    per = [x.get("seconds") for x in res if x.get("ok")]
    same = before == after
    say(
        f"rollback: `mlops fleet rollback` of 5 devices {wall:.2f}s wall, per device "
        f"{per}, {on1}/5 on m/1, objects unchanged: {same}"
    )
    del failed_at
    rows.append(
        ("rollback", "failed gate -> previous serving (rollback_s)", f"{rb_s} s",
         f"m/3 (inverted labels) fails golden rows on {first.device}; rollout {r.state}")
    )  # fmt: skip
    rows.append(
        ("rollback", "`mlops fleet rollback`, 5 devices (wall, CLI)", f"{wall:.2f} s",
         f"per device {min(per):.2f}-{max(per):.2f} s; {on1}/5 back on m/1; objects dirs "
         f"{'unchanged (no transfer)' if same else 'CHANGED'}")
    )  # fmt: skip


def part_shared(tmpl: Path, tmp: Path, rows: list, quick: bool) -> None:
    n, soak = (10, 10.0) if quick else (20, 60.0)
    waves = "1,4,5" if quick else "1,4,15"
    with lab_of(tmp / "lab-shared", n, shared_link=True) as lab:
        ws = copy_ws(tmpl, tmp / "ws-shared", lab)
        try:
            t0 = time.monotonic()
            seed = rollout(ws, "s/1")
            say(
                f"shared: seeded runtime + s/1 unshaped in {time.monotonic() - t0:.1f}s: {seed.counts()}"
            )
            lab.shared_rate(2000, 0.10)
            say(
                f"shared: link 2 Mbit/s, 10% loss; m/1 in waves {waves}, soak {soak:g}s (load {load()})"
            )
            t0 = time.monotonic()
            r = rollout(ws, "m/1", waves=waves, soak=soak, max_unreachable="50%")
            e2e = time.monotonic() - t0
            dropped = lab.shared_dropped_packets()
            on = sum(serving(d.root) == vid(ws, "m/1") for d in lab.devices)
            wire = sum((d.detail.get("transfer") or {}).get("wire_bytes", 0) for d in r.devices)
        finally:
            ws.close()
    floor = wire * 8 / 2e6
    say(
        f"shared: {r.state} {r.counts()} in {e2e:.0f}s ({e2e / 60:.1f} min); {on}/{n} on m/1; "
        f"{fmt_bytes(wire)} wire total (link floor {floor:.0f}s + soaks {2 * soak:g}s); "
        f"{dropped} packets dropped"
    )
    label = f"{n} devices, 2 Mbit/s shared, 10% loss, waves {waves}, soak {soak:g}s"
    rows.append(
        ("shared" + (" (quick)" if quick else ""), label,
         f"{e2e:.0f} s ({e2e / 60:.1f} min) vs 15 min target",
         f"{r.state}, {on}/{n} serving m/1; {fmt_bytes(wire)} model wire total "
         f"(2 Mbit/s floor {floor:.0f} s + {2 * soak:g} s soak); {dropped} packets dropped")
    )  # fmt: skip


def seed_runtime(lab, runtime) -> None:
    """Put the runtime's layers on each device as the agent leaves them once extracted
    (runtime/<sha>/site), by hard links from one extraction: 'already present'."""
    import tarfile

    for layer in runtime.layers:
        master = lab.base / f"runtime-master-{layer.sha256[:12]}"
        if not master.exists():
            tmp = lab.base / f"{master.name}.tmp"
            tmp.mkdir(parents=True)
            with tarfile.open(layer.path) as tf:
                tf.extractall(tmp)
            tmp.rename(master)
        for d in lab.devices:
            dest = d.root / "runtime" / layer.sha256
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(master), str(dest)], check=True)


def child_rollout(ws_root: str, ref: str) -> None:
    from mlops_console.workspace import Workspace

    with Workspace.open(ws_root) as ws:
        r = rollout(ws, ref)
    sent = [d.detail.get("transfer", {}).get("sent_objects") for d in r.devices]
    print(json.dumps({"state": r.state, "counts": r.counts(), "sent_objects": sent}))


def part_scale(tmpl: Path, tmp: Path, rows: list) -> None:
    layer = runtime_layer()
    points = []
    for n in (10, 25, 50):
        with lab_of(tmp / f"lab-scale{n}", n) as lab:
            seed_runtime(lab, layer)
            ws = copy_ws(tmpl, tmp / f"ws-scale{n}", lab)
            ws.close()
            t0 = time.monotonic()
            p = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child-rollout",
                 str(tmp / f"ws-scale{n}"), "s/1"],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            out = p.stdout.read().decode()  # type: ignore[union-attr]
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - t0
            doc = json.loads(out.strip().splitlines()[-1])
            cpu = ru.ru_utime + ru.ru_stime
            rss = ru.ru_maxrss * 1024
            points.append((n, rss, cpu, wall))
            say(
                f"scale {n}: {doc['counts']}, runtime sent to "
                f"{sum(1 for s in doc['sent_objects'] if (s or 0) > 3)} device(s); controller "
                f"peak RSS {rss / MiB:.0f} MiB, CPU {cpu:.1f}s, wall {wall:.0f}s (load {load()})"
            )
    xs = [p[0] for p in points]

    def fit(ys):
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        return my - b * mx, b

    a_r, b_r = fit([p[1] for p in points])
    a_c, b_c = fit([p[2] for p in points])
    for n, rss, cpu, wall in points:
        rows.append(
            ("scale", f"controller, {n} devices (s/1, runtime present)",
             f"{rss / MiB:.0f} MiB peak RSS, {cpu:.1f} s CPU", f"wall {wall:.0f} s")
        )  # fmt: skip
    rows.append(
        ("scale", "per device (linear fit)", f"{b_r / MiB:.2f} MiB, {b_c:.3f} s CPU",
         f"intercept {a_r / MiB:.0f} MiB, {a_c:.1f} s CPU")
    )  # fmt: skip
    rows.append(
        ("scale", "extrapolated to 1,000 devices",
         f"{(a_r + 1000 * b_r) / MiB:.0f} MiB peak RSS, {a_c + 1000 * b_c:.0f} s CPU",
         "linear in devices; parallel=8 bounds what is open at once")
    )  # fmt: skip


# --------------------------------------------------------------------------- table


def write_table(rows: list, ran: set[str], header: str) -> str:
    kept: list[tuple] = []
    if RESULTS.exists():  # keep the rows of parts not run this time
        for line in RESULTS.read_text().splitlines():
            m = re.match(r"^\| (\S[^|]*?) \| (.*?) \| (.*?) \| (.*?) \|$", line)
            if m and m.group(1) not in ("part", "---") and m.group(1).split()[0] not in ran:
                kept.append(m.groups())
    order = {p: i for i, p in enumerate(PARTS)}
    allrows = sorted(kept + rows, key=lambda r: order.get(r[0].split()[0], 99))
    lines = ["| part | case | result | detail |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in allrows]
    table = "\n".join(lines)
    RESULTS.write_text("# Edge-fleet bench (bench/fleet.py)\n\n" + header + "\n\n" + table + "\n")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS))
    ap.add_argument("--quick", action="store_true", help="shared: 10 devices, 10 s soak")
    ap.add_argument("--trees", type=int, default=82, help="random forest trees (model size)")
    ap.add_argument("--rows", type=int, default=3000, help="training rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--child-rollout", nargs=2, metavar=("WS", "REF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_rollout:
        child_rollout(*args.child_rollout)
        return
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {','.join(PARTS)}")
    import netdevices

    missing = netdevices.missing_requirements()
    if missing:
        sys.exit("device lab unavailable: " + "; ".join(missing))
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    started = time.time()
    say(
        f"parts {parts}{' (quick)' if args.quick else ''}; {os.cpu_count()} CPUs, load {load()}; in {tmp}"
    )
    rows: list[tuple] = []
    loads = []
    try:
        sizes = build_workspace(tmp / "template", args.trees, args.rows)
        say(f"runtime layer: {fmt_bytes(runtime_layer().size)}")
        for p in parts:
            t0 = time.monotonic()
            say(f"== {p} (load {load()})")
            try:
                if p == "shared":
                    part_shared(tmp / "template", tmp, rows, args.quick)
                else:
                    globals()[f"part_{p}"](tmp / "template", tmp, rows)
            except Exception as e:  # one part failing leaves the others' figures
                import traceback

                traceback.print_exc()
                rows.append((p, "FAILED", f"{type(e).__name__}", str(e)[:200].replace("|", "/")))
            loads.append(f"{p} {time.monotonic() - t0:.0f}s, load after {load()}")
            say(f"== {p} done in {time.monotonic() - t0:.0f}s (load {load()})")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    m1 = sizes["m/1"]
    header = (
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"`{' '.join(['.venv/bin/python', 'bench/fleet.py', *sys.argv[1:]])}`; "
        f"{os.cpu_count()} CPUs shared with other work ({'; '.join(loads)}). "
        f"Model m/1: RandomForest {args.trees} trees, "
        + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in m1.items())
        + ". Wire bytes = chunk payload sent (zstd-3 per 1 MiB chunk), SSH framing not counted."
    )
    table = write_table(rows, set(parts), header)
    print("\n" + header + "\n\n" + table)


if __name__ == "__main__":
    main()
