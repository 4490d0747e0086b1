"""The console's Fleet area (`mlops_console_areas`): the devices of fleet.toml with their
recorded state and their place in the current rollout, the rollout's waves, and the
actions of `mlops fleet` (rollout, pause, resume, abort, rollback, pin, unpin, refresh).

Like the built-in areas it is data: plain functions the console runs in worker threads.
Listing and details read the record only (fleet.toml and .mlops/fleet.db), never the
network, so the screen stays quick while devices are slow or gone; the console's polls
reload it, which is how a rollout running in an action's worker shows its devices move.
Only `refresh` and the actions reach the devices. It also adds fleet rows to the Overview
(`Area.overview`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from mlops_console.errors import MlopsError
from mlops_console.formatting import when
from mlops_console.tui.areas.common import Action, Area, Listing, _num
from mlops_edge_ssh.inventory import FILE

if TYPE_CHECKING:
    from mlops_edge_ssh.service import FleetService
    from mlops_edge_ssh.store import Rollout, RolloutDevice

# the rollout second: the column that moves, seen at 80 columns too
COLUMNS = ["device", "rollout", "reach", "serving", "desired", "health", "pin/hold", "last seen"]
FLEET_KEY = "fleet:"  # the row of the fleet itself (or of its absence)
NO_FLEET = (
    f"No {FILE} in this workspace: `mlops fleet add NAME --host HOST` adds a device "
    "(then `mlops fleet check NAME` tries it)."
)
STATE_COLOUR = {
    "healthy": "green",
    "failed": "red",
    "unreachable": "yellow",
    "refused": "red",
    "rolled_back": "yellow",
    "skipped": "dim",
    "sending": "cyan",
    "switching": "cyan",
    "gating": "cyan",
    "running": "cyan",
    "pausing": "yellow",
    "paused": "yellow",
    "aborting": "red",
    "aborted": "red",
    "done": "green",
}


def _when(ts: float | None) -> str:
    return when(ts)  # to the second: a device seen a minute ago is news


def _configured(ws) -> bool:
    """fleet.toml exists (checked before anything opens .mlops/fleet.db)."""
    return (Path(ws.root) / FILE).exists()


def _service(ws) -> FleetService:
    from mlops_edge_ssh.service import FleetService  # SSH and friends: only when used

    return FleetService(ws)


def _read(ws) -> tuple[list[dict[str, Any]], Rollout | None]:
    """The devices with their recorded state, and the running (else the latest) rollout."""
    with _service(ws) as svc:
        return svc.devices(), svc.store.active() or svc.store.rollout()


def _coloured(state: str) -> str:
    colour = STATE_COLOUR.get(state)
    return f"[{colour}]{state}[/]" if colour else state


def bar(progress: float | None, width: int = 8) -> str:
    """`████░░░░ 50%`: how much of a device's transfer is through."""
    p = min(max(progress or 0.0, 0.0), 1.0)
    filled = round(p * width)
    return "█" * filled + "░" * (width - filled) + f" {p:.0%}"


def _step(d: RolloutDevice) -> str:
    """Its state in the rollout, with the transfer's bar while it is sending."""
    return _coloured(d.state) + (" " + bar(d.progress) if d.state == "sending" else "")


def _device_rollout(d: RolloutDevice | None) -> str:
    if d is None:
        return "-"
    return (f"w{d.wave + 1} " if d.wave >= 0 else "") + _step(d)


def _counts(r: Rollout) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(r.counts().items())) or "no devices"


def _summary(r: Rollout) -> str:
    """One line, as `mlops fleet status` says it."""
    return (
        f"Rollout {r.id}: {r.target} {r.state}"
        + (f" ({r.reason})" if r.reason else "")
        + f"; wave {r.wave + 1}/{len(r.waves)}; {_counts(r)}"
    )


def _health(h: str | None) -> str:
    if not h:
        return "-"
    if h == "unknown":  # not reached: the reach column says so
        return "[dim]unknown[/]"
    return f"[green]{h}[/]" if h == "ok" else f"[red]{escape(h)}[/]"


def _reach(value: bool | None) -> str:
    return {True: "yes", False: "[red]NO[/]", None: "?"}[value]


# -- the listing ------------------------------------------------------------------------


def _fleet(ws) -> Listing:
    if not _configured(ws):
        return Listing(["fleet"], [(FLEET_KEY, [NO_FLEET])])
    try:
        devices, r = _read(ws)
    except MlopsError as exc:  # a fleet.toml that does not parse: say why, keep the screen
        return Listing(["fleet"], [(FLEET_KEY, [escape(str(exc))])])
    rows: list[tuple[str, list[str]]] = []
    if r is not None:
        rows.append(
            (
                f"rollout:{r.id}",
                [
                    "rollout",
                    f"{_coloured(r.state)} wave {r.wave + 1}/{len(r.waves)}",
                    "",
                    escape(r.target),
                    "",
                    "",
                    "",
                    _when(r.updated_at),
                ],
            )
        )
    mine = {d.device: d for d in r.devices} if r else {}
    for d in devices:
        rows.append(
            (
                d["name"],
                [
                    d["name"],
                    _device_rollout(mine.get(d["name"])),
                    _reach(d["reachable"]),
                    escape(d["serving"] or "-"),
                    escape(d["desired"] or "-") + ("" if d["converged"] else " (pending)"),
                    _health(d["health"]),
                    escape(d["pin"] or "-") + (" held" if d["hold"] else ""),
                    _when(d["last_seen"]) if d["last_seen"] else "never",
                ],
            )
        )
    if not devices:
        rows.append((FLEET_KEY, [f"(no devices in {FILE})", *[""] * (len(COLUMNS) - 1)]))
    return Listing(COLUMNS, rows)


# -- details ----------------------------------------------------------------------------


def _detail(ws, key: str) -> str:
    if key == FLEET_KEY:
        return _fleet_detail(ws)
    if key.startswith("rollout:"):
        return _rollout_detail(ws, key.removeprefix("rollout:"))
    return _device_detail(ws, key)


def _fleet_detail(ws) -> str:
    if not _configured(ws):
        return NO_FLEET
    try:
        devices, r = _read(ws)
    except MlopsError as exc:
        return escape(str(exc))
    reached = sum(1 for d in devices if d["reachable"])
    lines = [
        f"Fleet: {len(devices)} device(s) in {FILE}; {reached} reachable when last seen.",
        "The state shown is the last recorded one; R (fleet: refresh) polls every device.",
    ]
    if r is not None:
        lines += ["", escape(_summary(r))]
    return "\n".join(lines)


def _rollout_detail(ws, rid: str) -> str:
    from mlops_edge_ssh.rollout import controller_alive

    with _service(ws) as svc:
        r = svc.store.rollout(rid)
        if r is None:
            return f"No rollout {rid} in the record."
        events = svc.events(r.id, limit=20)
    by_wave: dict[int, list[RolloutDevice]] = {}
    for d in r.devices:
        by_wave.setdefault(d.wave, []).append(d)
    lines = [
        f"Rollout {r.id}: {escape(r.target)} ({escape(r.ref)}) {_coloured(r.state)}"
        + (f" ({escape(r.reason)})" if r.reason else ""),
        f"  started {_when(r.created_at)}"
        + (f" by {escape(r.created_by)}" if r.created_by else "")
        + f", updated {_when(r.updated_at)}; controller "
        + (f"running ({escape(r.owner or '')})" if controller_alive(r) else "not running"),
        f"  soak {r.soak:g}s after each wave; abort past {r.max_failed:.0%} failed; pause past "
        f"{r.max_unreachable:.0%} unreachable; "
        + ("failed and switched devices roll back" if r.auto_rollback else "no automatic rollback"),
        "",
        "Waves:",
    ]
    for i in range(len(r.waves)):
        devs = by_wave.get(i, [])
        counts: dict[str, int] = {}
        for d in devs:
            counts[d.state] = counts.get(d.state, 0) + 1
        mark = " (current)" if i == r.wave and r.state not in ("done", "aborted", "failed") else ""
        lines.append(
            f"  wave {i + 1}{mark}: "
            + (", ".join(f"{n} {_coloured(s)}" for s, n in sorted(counts.items())) or "-")
        )
        for d in devs:
            extra = escape(str(d.detail.get("reason") or ""))[:80]
            lines.append(f"    {d.device:<14} {_device_rollout(d)}  {extra}".rstrip())
    for d in by_wave.get(-1, []):
        lines.append(f"  skipped: {d.device} ({escape(str(d.detail.get('reason') or '-'))})")
    lines += ["", f"Total: {_counts(r)}", "", "Events:"]
    lines += _event_lines(events)
    return "\n".join(lines)


def _event_lines(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"  {_when(e['ts'])}  {e['kind']:<12} {escape(e['device'] or ''):<10} "
        f"{escape(str(e['message']))[:120]}"
        for e in events
    ] or ["  (none)"]


def _size(n: Any) -> str:
    return f"{float(n) / 2**20:.0f} MiB" if isinstance(n, (int, float)) else "-"


def _device_detail(ws, name: str) -> str:
    if not _configured(ws):
        return NO_FLEET
    with _service(ws) as svc:
        devices, r = svc.devices(), svc.store.active() or svc.store.rollout()
        events = svc.events(device=name, limit=10)
    d = next((x for x in devices if x["name"] == name), None)
    if d is None:
        return f"No device {escape(name)} in {FILE}."
    t = d.get("telemetry") or {}
    skew = t.get("clock_skew_s")
    lines = [
        f"Device {d['name']} ({escape(d['user'])}@{escape(d['host'])}:{d['port']})",
        f"  groups {escape(', '.join(d['groups']) or '-')}; tags "
        + escape(", ".join(f"{k}={v}" for k, v in d["tags"].items()) or "-")
        + f"; link {escape(str(d['link']))}",
        f"  runtime {escape(d['runtime'])}, root {escape(d['root'])}",
        f"  pin {escape(d['pin'] or '-')}; "
        + ("held: rollouts skip it" if d["hold"] else "not held"),
        "",
        "Recorded state (R polls the devices):",
        f"  reachable {_reach(d['reachable'])}; last seen "
        + (_when(d["last_seen"]) if d["last_seen"] else "never")
        + f"; checked {_when(d['checked_at'])}",
        f"  serving {escape(d['serving'] or '-')}; desired {escape(d['desired'] or '-')}"
        + ("" if d["converged"] else " (pending)"),
        f"  health {_health(d['health'])}"
        + (f"; error: {escape(str(d['error']))}" if d.get("error") else ""),
        "",
        "Telemetry:",
        f"  rss {_size(t.get('rss'))}; requests {_num(t.get('requests'))}; errors "
        f"{_num(t.get('errors'))}; p99 {_num(t.get('p99_ms'))} ms; clock skew "
        + (f"{skew:+.1f}s" if isinstance(skew, (int, float)) else "-")
        + f"; restarts {_num(t.get('restarts'))}",
        f"  disk free {_size(t.get('disk_free'))}; memory available {_size(t.get('mem_available'))}",
    ]
    mine = next((x for x in r.devices if x.device == name), None) if r else None
    if r is not None and mine is not None:
        lines += ["", f"In rollout {r.id} ({escape(r.target)}, {_coloured(r.state)}):"]
        lines += _record_lines(mine)
    lines += ["", "Last events:", *_event_lines(events)]
    return "\n".join(lines)


def _record_lines(d: RolloutDevice) -> list[str]:
    """A device's rollout record: its step, the gate's verdict and the answer that failed
    it (kept in the record), where it went back to."""
    det = d.detail
    lines = [
        f"  wave {d.wave + 1 if d.wave >= 0 else '-'}: {_step(d)} "
        f"(attempt {d.attempts}, updated {_when(d.updated_at)})",
        f"  previous {escape(str(d.previous or det.get('previous') or '-'))}",
    ]
    if det.get("reason"):
        lines.append(
            f"  reason: {escape(str(det['reason']))}"
            + (f" (step {escape(str(det['step']))})" if det.get("step") else "")
        )
    gate = det.get("gate") or {}
    if gate:
        lines.append(
            "  gate: "
            + (
                "[green]passed[/]"
                if gate.get("passed")
                else f"[red]failed at {gate.get('step')}[/]"
            )
            + f": {escape(str(gate.get('reason') or ''))}"
        )
        measured = [
            f"{k} {gate[k]}" for k in ("golden_ms", "requests", "errors", "p99_ms") if k in gate
        ]
        if measured:
            lines.append("    " + ", ".join(measured))
        if "response" in gate:
            lines.append(f"  the answer that failed it (status {gate.get('status')}):")
            text = str(gate["response"])
            lines += ["    " + escape(ln) for ln in text[:1500].splitlines() or [""]]
            if len(text) > 1500:
                lines.append(f"    ... ({len(text)} characters kept in the record)")
    if "rolled_back_to" in det:
        lines.append(f"  rolled back to {escape(str(det['rolled_back_to'] or 'nothing'))}")
    for k, say in (("stopped", "stopped"), ("rollback_error", "rollback failed")):
        if det.get(k):
            lines.append(f"  {say}: {escape(str(det[k]))}")
    tr = det.get("transfer") or {}
    if tr:
        lines.append(
            f"  transfer: {tr.get('sent_objects')} of {tr.get('objects')} object(s) sent, "
            f"{tr.get('wire_bytes')} bytes on the wire"
        )
    return lines


# -- the Overview's fleet rows -----------------------------------------------------------


def _overview(ws) -> list[tuple[str, list[str]]]:
    """The fleet in one row, the rollout in another, and each device that needs a look
    (unreachable, unhealthy, not on its desired version), five at most. Nothing without a
    fleet.toml: a workspace without a fleet has no fleet rows."""
    if not _configured(ws):
        return []
    try:
        devices, r = _read(ws)
    except MlopsError as exc:
        return [(FLEET_KEY, ["fleet", FILE, "[red]unreadable[/]", escape(str(exc))])]
    serving: dict[str, int] = {}
    for d in devices:
        if d["serving"]:
            serving[d["serving"]] = serving.get(d["serving"], 0) + 1
    down = {d["name"] for d in devices if d["reachable"] is False}
    never = {d["name"] for d in devices if d["reachable"] is None}
    sick = {d["name"] for d in devices if d["health"] not in (None, "ok") and d["name"] not in down}
    pending = {d["name"] for d in devices if not d["converged"]}
    state = [f"{len(devices) - len(down) - len(never)}/{len(devices)} reachable"]
    if down:
        state.append(f"[red]{len(down)} unreachable[/]")
    if never:
        state.append(f"{len(never)} never seen")
    if sick:
        state.append(f"[red]{len(sick)} unhealthy[/]")
    if pending:
        state.append(f"[yellow]{len(pending)} pending[/]")
    rows = [
        (
            FLEET_KEY,
            [
                "fleet",
                f"{len(devices)} device(s)",
                escape(", ".join(f"{v} on {n}" for v, n in sorted(serving.items())) or "-"),
                " | ".join(state),
            ],
        )
    ]
    if r is not None:
        rows.append(
            (
                f"rollout:{r.id}",
                ["rollout", r.id, escape(r.target), f"{_coloured(r.state)} | {_counts(r)}"],
            )
        )
    for d in [d for d in devices if d["name"] in down | sick | pending][:5]:
        why = (
            "[red]unreachable[/]"
            if d["name"] in down
            else _health(d["health"])
            if d["name"] in sick
            else f"[yellow]pending {escape(d['desired'] or '')}[/]"
        )
        rows.append((d["name"], ["device", d["name"], escape(d["serving"] or "-"), why]))
    return rows


# -- actions ------------------------------------------------------------------------------


def _device_of(key: str) -> str:
    if not key or ":" in key:
        raise MlopsError("select a device row first (this row is not a device)")
    return key


ROLLOUT_OPTIONS = ("waves", "soak", "group", "max_failed", "max_unreachable")


def _parse_rollout(answer: str) -> tuple[str, dict[str, Any]]:
    """`REF [waves=1,50%,100%] [soak=60s] [group=G] [max_failed=10%] [max_unreachable=30%]`."""
    from mlops_console.durations import parse_duration

    parts = answer.split()
    if not parts:
        raise MlopsError("type a model reference, e.g. churn@champion")
    opts: dict[str, Any] = {"waves": "1,10%,50%,100%", "soak": 60.0}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        name = name.replace("-", "_")
        if not eq or name not in ROLLOUT_OPTIONS or not value:
            raise MlopsError(
                f"{part!r} is not an option; use " + ", ".join(f"{o}=..." for o in ROLLOUT_OPTIONS)
            )
        opts[name] = parse_duration(value, "soak") if name == "soak" else value
    return parts[0], opts


def _ended(r: Rollout) -> str:
    """The rollout's outcome; an aborted or failed one is the action failing (the CLI exits 1)."""
    text = _summary(r)
    if r.state in ("aborted", "failed"):
        raise MlopsError(text)
    return text


def _rollout(ws, key: str, answer: str) -> str:
    """Plan, record and run a rollout, the whole of it in this (worker) thread: the
    listing's polls show each device move through the record meanwhile."""
    ref, opts = _parse_rollout(answer)
    with _service(ws) as svc:
        p = svc.plan(ref, **opts)
        rid = svc.start(p, "console")
        return _ended(svc.run(rid))


def _pause(ws, key: str) -> str:
    with _service(ws) as svc:
        r = svc.pause()
    return f"Rollout {r.id}: pause asked; it stops after the steps in flight."


def _resume(ws, key: str) -> str:
    with _service(ws) as svc:
        return _ended(svc.resume())


def _abort(ws, key: str) -> str:
    with _service(ws) as svc:
        r = svc.abort("aborted from the console")
    if r.state == "aborting":  # its controller runs elsewhere and acts between steps
        return f"Rollout {r.id}: abort asked; its controller stops and rolls back."
    return _summary(r)


def _rollback(ws, key: str) -> str:
    name = _device_of(key)
    with _service(ws) as svc:
        res = svc.rollback([name])
    r = res[0]
    if not r["ok"]:
        raise MlopsError(f"{name}: not rolled back: {r['reason']}")
    return f"{name}: back on {r['serving']} in {r['seconds']:.2f}s"


def _pin(ws, key: str, answer: str) -> str:
    name = _device_of(key)
    ref = answer.strip()
    if not ref:
        raise MlopsError("type a model version, e.g. churn/3 or churn@champion")
    with _service(ws) as svc:
        fleet = svc.pin(ref, device=name)
    return f"Pinned {name} to {fleet.device(name).pin}."


def _unpin(ws, key: str) -> str:
    name = _device_of(key)
    with _service(ws) as svc:
        svc.unpin(device=name)
    return f"Unpinned {name}."


def _refresh(ws, key: str) -> str:
    with _service(ws) as svc:
        st = svc.status(live=True)
    rows = st["devices"]
    reached = sum(1 for d in rows if d["reachable"])
    return f"{reached} of {len(rows)} device(s) reached now."


AREA = Area(
    "fleet",
    "Fleet",
    "Edge devices over SSH (fleet.toml): each one's recorded state, its place in the "
    "running rollout, the rollout's waves. R polls the devices; d rolls a version out.",
    _fleet,
    _detail,
    [
        Action(
            "d",
            "fleet: rollout",
            "Roll a model version out in waves, behind health gates",
            _rollout,
            ask="MODEL@ALIAS [waves=1,10%,50%,100%] [soak=60s] [group=G], e.g. churn@champion",
        ),
        Action(
            "z",
            "fleet: pause",
            "Pause the running rollout after the steps in flight",
            _pause,
            destructive=False,
        ),
        Action("u", "fleet: resume", "Go on with a paused or interrupted rollout", _resume),
        Action("x", "fleet: abort", "Abort the rollout; switched devices roll back", _abort),
        Action(
            "b",
            "device: rollback",
            "Put the selected device back on its previous version (no transfer)",
            _rollback,
        ),
        Action(
            "p",
            "device: pin",
            "Pin the selected device to a version (fleet.toml)",
            _pin,
            ask="MODEL/VERSION or MODEL@ALIAS, e.g. churn/3",
        ),
        Action("P", "device: unpin", "Remove the selected device's pin", _unpin),
        Action(
            "R",
            "fleet: refresh",
            "Reach every device now and record what it serves",
            _refresh,
            destructive=False,
        ),
    ],
    overview=_overview,
    live=True,  # a rollout's progress is in fleet.db, not in the daemon's events
)
