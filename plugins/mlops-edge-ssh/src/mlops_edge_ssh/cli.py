"""`mlops fleet ...`: the edge fleet from the command line. Every command has `--json`."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from mlops_console.cli.output import (
    Output,
    emit_json,
    json_option,
    open_workspace,
    output_options,
    table,
    when,
)


def _service(say=None):
    from mlops_edge_ssh.service import FleetService

    ws = open_workspace(click.get_current_context())
    return ws, FleetService(ws, say=say)


def _say(as_json: bool):
    if as_json:
        return lambda m: click.echo(m, err=True)
    return lambda m: click.echo(f"  {time.strftime('%H:%M:%S')} {m}")


class TransferProgress:
    """Says each device's transfer every 10% while a controller runs in this process: the
    controller records it in the store (rollout_devices.progress), a thread reads it there."""

    def __init__(self, state_dir: Path, say, every: float = 1.0, step: float = 0.1):
        self.state_dir = Path(state_dir)
        self.say = say
        self.every = every
        self.step = step
        self._said: dict[tuple[str, str], int] = {}  # (rollout, device) -> last step said
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, store) -> None:
        """Say the devices whose transfer crossed a step since the last poll."""
        r = store.active()
        if r is None:
            return
        for d in r.devices:
            key = (r.id, d.device)
            if d.state != "sending" or d.progress is None:
                self._said.pop(key, None)  # a resend after a cut starts counting again
                continue
            n = int(d.progress / self.step + 1e-9)
            if n > self._said.get(key, 0):
                self._said[key] = n
                self.say(f"{d.device}: sending, {d.progress:.0%} of its layers sent")

    def _run(self) -> None:
        from mlops_edge_ssh.store import FleetStore

        store = FleetStore(self.state_dir)  # a connection of this thread's own
        try:
            while not self._stop.wait(self.every):
                try:
                    self.poll(store)
                except Exception as e:  # the rollout goes on; only its progress lines stop
                    self.say(f"(progress unavailable: {e})")
                    return
        finally:
            store.close()

    def __enter__(self) -> TransferProgress:
        self._thread = threading.Thread(target=self._run, name="fleet-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _progress(ws, as_json: bool) -> TransferProgress:
    return TransferProgress(Path(ws.state), _say(as_json))


def _ver(v: Any) -> str:
    return str(v) if v else "-"


def _device_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        reach = {True: "yes", False: "NO", None: "?"}[r["reachable"]]
        t = r.get("telemetry") or {}
        out.append(
            [
                r["name"],
                r["address"] if "address" in r else f"{r['host']}:{r['port']}",
                ",".join(r["groups"]) or "-",
                reach,
                _ver(r["serving"]),
                _ver(r["desired"]) + ("" if r["converged"] else " (pending)"),
                r["health"] or "-",
                " ".join(x for x in (r["pin"] and _ver(r["pin"]), r["hold"] and "held") if x)
                or "-",
                when(r["last_seen"]) if r["last_seen"] else "never",
                f"{t['rss'] / 2**20:.0f}M" if t.get("rss") else "-",
                _count(t.get("requests")),
                _count(t.get("errors")),
                f"{t['p99_ms']:.0f}ms" if t.get("p99_ms") is not None else "-",
            ]
        )
    return out


HEADERS = [
    "device",
    "address",
    "groups",
    "reach",
    "serving",
    "desired",
    "health",
    "pin",
    "seen",
    "rss",
    "req",
    "err",
    "p99",
]


def _count(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


@click.group()
def fleet() -> None:
    """Edge devices over SSH: inventory (fleet.toml), staged rollouts with health gates and
    automatic rollback, status, pins. Host keys are always verified."""


@fleet.command("devices")
@output_options
def devices() -> Output:
    """The devices in fleet.toml with their last known state (nothing is contacted)."""
    ws, svc = _service()
    with ws, svc:
        rows = svc.devices()
    return Output({"devices": rows}, lambda: table(HEADERS, _device_rows(rows), "(no devices)"))


@fleet.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Address the controller reaches it at.")
@click.option("--port", type=int, default=None)
@click.option("--user", default=None)
@click.option("--key", default=None, help="Private key file (relative to the workspace).")
@click.option(
    "--known-host",
    default=None,
    help='Its host key line ("ssh-ed25519 AAAA..."), checked on the device.',
)
@click.option("--group", "groups", multiple=True, help="Group(s) it belongs to.")
@click.option("--root", default=None, help="Install root on the device.")
@click.option("--runtime", type=click.Choice(["process", "docker"]), default=None)
@output_options
def add(name, host, port, user, key, known_host, groups, root, runtime) -> Output:
    """Add a device to fleet.toml (only its own lines are written)."""
    from mlops_edge_ssh import inventory

    ws = open_workspace(click.get_current_context())
    with ws:
        fl = inventory.add_device(
            Path(ws.root),
            name,
            host,
            port=port,
            user=user,
            key=key,
            known_host=known_host,
            groups=list(groups),
            root=root,
            runtime=runtime,
        )
    d = fl.device(name)
    return Output(
        {"device": d.to_dict()},
        lambda: click.echo(
            f"Added {name} ({d.address}) to fleet.toml. `mlops fleet check {name}` tries it."
        ),
    )


@fleet.command("remove")
@click.argument("name")
@output_options
def remove(name) -> Output:
    """Remove a device from fleet.toml (what is on the device stays there)."""
    from mlops_edge_ssh import inventory

    ws = open_workspace(click.get_current_context())
    with ws:
        inventory.remove_device(Path(ws.root), name)
    return Output({"removed": name}, lambda: click.echo(f"Removed {name} from fleet.toml."))


@fleet.command("check")
@click.argument("names", nargs=-1)
@click.option("--group", default=None)
@output_options
def check(names, group) -> Output:
    """Reach each device and check it can take rollouts: host key, disk, memory, CPU,
    OS/Python, a runtime build for its platform, what it serves, clock skew."""
    ws, svc = _service()
    with ws, svc:
        results = svc.check(list(names) or None, group)

    def human() -> None:
        for r in results:
            click.echo(f"{r['name']} ({r['address']}): {'ready' if r['ok'] else 'NOT READY'}")
            width = max((len(c["check"]) for c in r["checks"]), default=0)
            for c in r["checks"]:
                click.echo(f"  {'ok ' if c['ok'] else 'BAD'} {c['check']:<{width}}  {c['detail']}")

    out = Output({"devices": results}, human)
    if not all(r["ok"] for r in results):
        _emit_and_exit(out, 1)
    return out


def _exit_unless_done(rs) -> None:
    """Exit 1 (the README's "the operation failed") unless every rollout ended done with
    no device failed: a pause, an abort or a failed device is not a completed rollout."""
    if any(r.state != "done" or r.counts().get("failed") for r in rs):
        sys.exit(1)


def _emit_and_exit(out: Output, code: int) -> None:
    ctx = click.get_current_context()
    if ctx.params.get("as_json"):
        emit_json(out.data)
    else:
        out.human()
    sys.exit(code)


def _show_plan(p) -> None:
    click.echo(f"Rollout of {p.target} ({p.ref}):")
    for i, w in enumerate(p.waves):
        click.echo(f"  wave {i + 1}: {', '.join(d.name for d in w)}")
    for d, why in p.skipped:
        click.echo(f"  skipped: {d.name} ({why})")
    click.echo(
        f"  soak {p.soak:g}s after each wave; abort past {p.max_failed:.0%} failed; pause past "
        f"{p.max_unreachable:.0%} unreachable; "
        + ("failed and switched devices roll back" if p.auto_rollback else "no automatic rollback")
    )


NO_CONTROLLER = " (no controller: `mlops fleet resume` goes on)"
IN_FLIGHT = ("running", "pausing", "aborting")


def _orphaned(r) -> str:
    """The hint for a rollout recorded as in flight that no controller holds."""
    from mlops_edge_ssh.rollout import controller_alive

    return NO_CONTROLLER if r.state in IN_FLIGHT and not controller_alive(r) else ""


def _show_rollout(r) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(r.counts().items()))
    click.echo(
        f"Rollout {r.id}: {r.target} {r.state}"
        + (f" ({r.reason})" if r.reason else "")
        + _orphaned(r)
    )
    click.echo(f"  {counts}")
    for d in r.devices:
        extra = d.detail.get("reason") or ""
        prog = f" {d.progress:.0%}" if d.state == "sending" and d.progress is not None else ""
        click.echo(
            f"  wave {d.wave + 1 if d.wave >= 0 else '-'}  {d.device:<12} {d.state}{prog}  {extra}"
        )


@fleet.command("rollout")
@click.argument("ref")
@click.option("--group", default=None, help="Only this group (or tag key=value).")
@click.option("--device", "device_names", multiple=True, help="Only these devices.")
@click.option(
    "--waves",
    default="1,10%,50%,100%",
    show_default=True,
    help="Devices per wave: a count is a wave's size, a percentage the share reached by its end.",
)
@click.option(
    "--soak", default="60s", show_default=True, help="Wait after each wave before the next."
)
@click.option("--max-failed", default="10%", show_default=True)
@click.option("--max-unreachable", default="30%", show_default=True)
@click.option("--no-rollback", is_flag=True, help="On abort, leave switched devices as they are.")
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before starting.")
@json_option
def rollout(
    ref,
    group,
    device_names,
    waves,
    soak,
    max_failed,
    max_unreachable,
    no_rollback,
    dry_run,
    yes,
    as_json,
) -> None:
    """Roll REF (e.g. churn@champion) out in waves: each wave's devices get the version,
    switch, pass the health gate and soak; then the next wave starts by itself. Too many
    failures abort (and roll back); unreachable devices are counted apart and get the
    version when they come back."""
    from mlops_console.durations import parse_duration

    ws, svc = _service(_say(as_json))
    with ws, svc:
        p = svc.plan(
            ref,
            group=group,
            devices=list(device_names) or None,
            waves=waves,
            soak=parse_duration(soak),
            max_failed=max_failed,
            max_unreachable=max_unreachable,
            auto_rollback=not no_rollback,
        )
        if dry_run:
            emit_json({"plan": p.to_dict()}) if as_json else _show_plan(p)
            return
        if not as_json:
            _show_plan(p)
        if not yes and sys.stdin.isatty() and not click.confirm("Start it?", default=False):
            raise click.Abort()
        rid = svc.start(p)
        if not as_json:
            click.echo(f"Rollout {rid} started.")
        with _progress(ws, as_json):
            r = svc.run(rid)
        if as_json:
            emit_json({"rollout": r.to_dict()})
        else:
            _show_rollout(r)
        _exit_unless_done([r])


@fleet.command("status")
@click.argument("names", nargs=-1)
@click.option("--cached", is_flag=True, help="Show the last known state; contact nobody.")
@output_options
def status(names, cached) -> Output:
    """Each device now (reachable, version served, health, RSS, requests) and the rollout."""
    ws, svc = _service()
    with ws, svc:
        st = svc.status(live=not cached, names=list(names) or None)

    def human() -> None:
        table(HEADERS, _device_rows(st["devices"]), "(no devices in fleet.toml)")
        r = st["rollout"]
        if r:
            c = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items()))
            click.echo(
                f"\nRollout {r['id']}: {r['model']}/{r['version']} {r['state']}"
                + (f" ({r['reason']})" if r["reason"] else "")
                + f"; wave {r['wave'] + 1}/{len(r['waves'])}; {c}"
                + (NO_CONTROLLER if r["state"] in IN_FLIGHT and not st["controller_alive"] else "")
            )

    return Output(st, human)


@fleet.command("pause")
@output_options
def pause() -> Output:
    """Pause the running rollout after the device steps in flight."""
    ws, svc = _service()
    with ws, svc:
        r = svc.pause()
    return Output(
        {"rollout": r.to_dict()},
        lambda: click.echo(f"Rollout {r.id}: pause asked; it stops after the steps in flight."),
    )


@fleet.command("resume")
@click.argument("rollout_id", required=False)
@json_option
def resume(rollout_id, as_json) -> None:
    """Go on with a paused (or interrupted) rollout from where its record says it stopped."""
    ws, svc = _service(_say(as_json))
    with ws, svc, _progress(ws, as_json):
        r = svc.resume(rollout_id)
        emit_json({"rollout": r.to_dict()}) if as_json else _show_rollout(r)
        _exit_unless_done([r])


@fleet.command("abort")
@click.option("--reason", default="aborted by request")
@json_option
def abort(reason, as_json) -> None:
    """Abort the rollout: no more devices; switched ones roll back (unless --no-rollback was
    given at the start)."""
    ws, svc = _service(_say(as_json))
    with ws, svc:
        r = svc.abort(reason)
        emit_json({"rollout": r.to_dict()}) if as_json else _show_rollout(r)


@fleet.command("rollback")
@click.option("--device", "device_names", multiple=True)
@click.option("--group", default=None)
@output_options
def rollback(device_names, group) -> Output:
    """Put devices (all, a group or some) back on their previous version: it is kept on
    each device, so nothing is transferred."""
    ws, svc = _service()
    with ws, svc:
        res = svc.rollback(list(device_names) or None, group)

    def human() -> None:
        for r in res:
            if r["ok"]:
                click.echo(f"{r['device']}: back on {r['serving']} in {r['seconds']:.2f}s")
            else:
                click.echo(f"{r['device']}: not rolled back: {r['reason']}")

    out = Output({"devices": res}, human)
    if not all(r["ok"] for r in res):
        _emit_and_exit(out, 1)
    return out


@fleet.command("pin")
@click.argument("ref")
@click.option("--device", default=None)
@click.option("--group", default=None)
@output_options
def pin(ref, device, group) -> Output:
    """Pin a device or a group to a version (written to fleet.toml); rollouts of other
    versions of that model skip it, `fleet reconcile` brings it there."""
    ws, svc = _service()
    with ws, svc:
        mv = ws.models.resolve(ref)
        svc.pin(ref, device, group)
    who = f"group {group}" if group else device
    return Output(
        {"pinned": who, "version": mv.ref}, lambda: click.echo(f"Pinned {who} to {mv.ref}.")
    )


@fleet.command("unpin")
@click.option("--device", default=None)
@click.option("--group", default=None)
@output_options
def unpin(device, group) -> Output:
    """Remove a device's or a group's pin from fleet.toml."""
    ws, svc = _service()
    with ws, svc:
        had = svc.unpin(device, group)
    who = f"group {group}" if group else device
    return Output(
        {"unpinned": who, "pin": had},
        lambda: click.echo(f"Unpinned {who} (was {had})." if had else f"{who} had no pin."),
    )


@fleet.command("hold")
@click.argument("device")
@click.option("--release", is_flag=True, help="Take the hold off.")
@output_options
def hold(device, release) -> Output:
    """Hold a device (rollouts skip it) or --release it."""
    ws, svc = _service()
    with ws, svc:
        svc.hold(device, not release)
    return Output(
        {"device": device, "hold": not release},
        lambda: click.echo(f"{device}: {'released' if release else 'held; rollouts skip it'}."),
    )


@fleet.command("reconcile")
@json_option
def reconcile(as_json) -> None:
    """Bring every reachable device to its desired version (unreachable ones that came back,
    pins), gated like a rollout."""
    ws, svc = _service(_say(as_json))
    with ws, svc, _progress(ws, as_json):
        rs = svc.reconcile()
    if as_json:
        # "rollout" (the last one) stays for scripts written before there could be several
        all_ = [r.to_dict() for r in rs]
        emit_json({"rollout": all_[-1] if all_ else None, "rollouts": all_})
    elif not rs:
        click.echo("Every reachable device is on its desired version, its server up.")
    else:
        for r in rs:
            _show_rollout(r)
    _exit_unless_done(rs)


@fleet.command("history")
@click.argument("rollout_id", required=False)
@click.option("--limit", default=20, show_default=True)
@output_options
def history(rollout_id, limit) -> Output:
    """Past rollouts, or one rollout's devices and events."""
    ws, svc = _service()
    with ws, svc:
        if rollout_id:
            r = svc.rollout_record(rollout_id)
            evs = svc.events(r.id)

            def one() -> None:
                _show_rollout(r)
                click.echo("")
                for e in evs:
                    click.echo(
                        f"  {when(e['ts'])}  {e['kind']:<12} {e['device'] or '':<10} {e['message']}"
                    )

            return Output({"rollout": r.to_dict(), "events": evs}, one)
        rs = svc.history(limit)
    rows = [
        [
            r.id,
            r.target,
            r.state + _orphaned(r),
            len([d for d in r.devices if d.wave >= 0]),
            ", ".join(f"{n} {s}" for s, n in sorted(r.counts().items())),
            when(r.created_at),
        ]
        for r in rs
    ]
    return Output(
        {"rollouts": [r.to_dict() for r in rs]},
        lambda: table(
            ["id", "version", "state", "devices", "outcome", "started"], rows, "(no rollouts)"
        ),
    )


@fleet.command("logs")
@click.argument("device")
@click.option("--lines", "-n", default=100, show_default=True)
@output_options
def logs(device, lines) -> Output:
    """The server log of a device (its last lines)."""
    ws, svc = _service()
    with ws, svc:
        text = svc.logs(device, lines)
    return Output({"device": device, "log": text}, lambda: click.echo(text or "(empty)"))


@fleet.command("golden")
@click.argument("ref")
@output_options
def golden(ref) -> Output:
    """Record golden rows from a version known to be good (golden/MODEL.json): the gate of
    every later rollout of the model checks the device agrees with them."""
    ws, svc = _service()
    with ws, svc:
        path = svc.record_golden(ref)
    return Output(
        {"path": str(path)},
        lambda: click.echo(f"Recorded {path} from {ref}; rollouts of this model are gated on it."),
    )
