"""`fleet.toml`: the devices, their groups, pins and holds, and how to reach them.

The file is user text at the workspace root (kept under git). It is read on every command
and never rewritten wholesale: `fleet add | remove | pin | unpin | hold` change only the
lines they own, and a change that would leave the file invalid is not written.

    [defaults]            # every device unless it says otherwise
    user = "root"
    key = "keys/fleet_ed25519"
    known_hosts = "fleet_known_hosts"
    runtime = "process"   # or "docker"
    root = "/opt/mlops-edge"

    [fleet]               # how the controller works
    parallel = 8          # devices worked on at once (OpenSSH throttles >10 logins)
    per_link = 4          # at once behind one `link` (devices sharing an uplink)

    [gate]                # the health gate after a switch (these are the defaults)
    ready_timeout = 60    # seconds for /health and /version to name the new version
    requests = 20         # the window: requests after the golden one, none may fail
    max_p99_ms = 2000

    [group.plant-a]
    pin = "churn/3"       # optional: every device of the group stays on churn/3

    [[device]]
    name = "gw-01"
    host = "10.210.1.2"
    port = 22
    groups = ["plant-a"]
    tags = { line = "3" }
    root = "/srv/edge/gw-01"   # optional override
    pin = "churn/3"            # optional
    hold = false               # true: rollouts skip it
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_console.errors import ConfigError, MlopsError
from mlops_console.registry.records import parse_ref
from mlops_edge_ssh.gate import GateSettings

FILE = "fleet.toml"
RUNTIMES = ("process", "docker")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEVICE_KEYS = {
    "name",
    "host",
    "port",
    "user",
    "key",
    "known_hosts",
    "known_host",
    "runtime",
    "root",
    "groups",
    "tags",
    "pin",
    "hold",
    "python",
    "serve_port",
    "keep",
    "link",
}
DEFAULT_KEYS = DEVICE_KEYS - {"name", "host", "groups", "tags", "pin", "hold"}
GROUP_KEYS = {"pin", "hold"}
FLEET_KEYS = {"parallel", "per_link", "connect_timeout"}


class InventoryError(ConfigError):
    pass


_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_KEY_TYPES = re.compile(r"ssh-ed25519|ssh-rsa|ecdsa-sha2-[a-z0-9]+|sk-[A-Za-z0-9@._-]+")


def check_known_host(where: str, value: object) -> str:
    """A `known_host` value: "KEYTYPE BASE64" (an optional comment after it)."""
    parts = value.split() if isinstance(value, str) else []
    ok = len(parts) >= 2 and _KEY_TYPES.fullmatch(parts[0]) is not None
    if ok:
        b64 = parts[1].rstrip("=")
        try:
            # the blob starts with its own key type, length-prefixed; its head is decoded
            # (whole 4-character groups), so a type pasted with another type's key is caught
            blob = base64.b64decode(b64[: len(b64) // 4 * 4], validate=True)
            n = int.from_bytes(blob[:4], "big")
            ok = _B64.fullmatch(parts[1]) is not None and blob[4 : 4 + n] == parts[0].encode()
        except (binascii.Error, ValueError):
            ok = False
    if not ok:
        raise InventoryError(
            f"{where} known_host {value!r} is not a host key line: it must be "
            '"KEYTYPE BASE64" (ssh-ed25519, ecdsa-sha2-*, ssh-rsa or sk-*), e.g. the output of '
            "`cat /etc/ssh/ssh_host_ed25519_key.pub` on the device itself, without the host name."
        )
    return value.strip()  # type: ignore[union-attr]


def check_device_name(name: object) -> str:
    # "--" separates a deployment from a device in prediction-log names (STEM--DEVICE)
    if isinstance(name, str) and _NAME.fullmatch(name) and "--" not in name:
        return name
    raise InventoryError(
        f"Device name {name!r} is not allowed: use letters, digits, '_', '-' or '.', starting "
        "with a letter or digit, no '--', at most 64 characters."
    )


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    port: int = 22
    user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    known_host: str | None = None  # one host key line ("ssh-ed25519 AAAA...") instead of a file
    runtime: str = "process"
    root: str = "/opt/mlops-edge"
    groups: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    pin: str | None = None  # its own pin
    hold: bool = False
    python: str = "python3"
    serve_port: int = 8080  # the server's port on the device's loopback
    keep: int = 2  # versions kept on the device (current + previous)
    link: str | None = None  # devices behind one uplink share a concurrency limit
    group_pin: str | None = None  # the pin its groups give it, if any
    group_hold: bool = False

    @property
    def effective_pin(self) -> str | None:
        return self.pin or self.group_pin

    @property
    def held(self) -> bool:
        return self.hold or self.group_hold

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "runtime": self.runtime,
            "root": self.root,
            "groups": list(self.groups),
            "tags": dict(self.tags),
            "pin": self.effective_pin,
            "hold": self.held,
            "link": self.link or self.host,
        }


@dataclass(frozen=True)
class Fleet:
    path: Path
    devices: tuple[Device, ...]
    groups: dict[str, dict[str, Any]]
    parallel: int = 8
    per_link: int = 4
    connect_timeout: float = 15.0
    gate: dict[str, Any] = field(default_factory=dict)  # [gate]: GateSettings for rollouts

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.devices) or "none"
        raise MlopsError(
            f"No device {name!r} in {self.path.name} (devices: {known}); "
            "`mlops fleet add NAME --host HOST` adds one."
        )

    def select(self, group: str | None = None, devices: list[str] | None = None) -> list[Device]:
        """Devices of `group` (or tag `key=value`), or the named ones, in file order."""
        chosen = list(self.devices)
        if group:
            if "=" in group:
                k, v = group.split("=", 1)
                chosen = [d for d in chosen if d.tags.get(k) == v]
            else:
                chosen = [d for d in chosen if group in d.groups]
            if not chosen:
                raise MlopsError(
                    f"No device is in group {group!r}; groups: "
                    f"{', '.join(sorted({g for d in self.devices for g in d.groups})) or 'none'}."
                )
        if devices:
            for n in devices:
                self.device(n)
            chosen = [d for d in chosen if d.name in devices]
        return chosen


def _where(path: Path, what: str) -> str:
    return f"{path.name}: {what}"


def _check_ref(path: Path, where: str, ref: object) -> str:
    if not isinstance(ref, str):
        raise InventoryError(_where(path, f"{where} pin must be a string like 'churn/3'."))
    name, _alias, version = parse_ref(ref)
    if version is None:
        raise InventoryError(
            _where(
                path,
                f"{where} pin {ref!r} must name a version (NAME/VERSION, e.g. 'churn/3'): a pin "
                "to an alias would move when the alias moves.",
            )
        )
    return f"{name}/{version}"


def _resolve_file(ws_root: Path, value: object, path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InventoryError(_where(path, f"{key} must be a path."))
    p = Path(value).expanduser()
    return p if p.is_absolute() else ws_root / p


def _where_known_host(path: Path, where: str, value: object) -> str:
    try:
        return check_known_host(where, value)
    except InventoryError as e:
        raise InventoryError(_where(path, str(e))) from None


def _int(path: Path, where: str, key: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InventoryError(_where(path, f"{where} {key} must be a whole number {lo}-{hi}."))
    return value


def parse(text: str, path: Path, ws_root: Path) -> Fleet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(_where(path, f"not valid TOML ({e}); fix the line it names.")) from e
    unknown = set(doc) - {"defaults", "device", "group", "fleet", "gate"}
    if unknown:
        raise InventoryError(
            _where(
                path,
                f"unknown section(s) {', '.join(sorted(unknown))}; "
                "use [defaults], [fleet], [gate], [group.NAME] and [[device]].",
            )
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InventoryError(_where(path, "[defaults] must be a table."))
    bad = set(defaults) - DEFAULT_KEYS
    if bad:
        raise InventoryError(_where(path, f"[defaults] does not take {', '.join(sorted(bad))}."))
    settings = doc.get("fleet", {})
    bad = set(settings) - FLEET_KEYS
    if bad:
        raise InventoryError(
            _where(
                path,
                f"[fleet] does not take {', '.join(sorted(bad))}; it takes "
                f"{', '.join(sorted(FLEET_KEYS))}.",
            )
        )
    gate = doc.get("gate", {})
    try:
        if not isinstance(gate, dict):
            raise ValueError("[gate] must be a table")
        GateSettings.from_dict(gate)
    except (ValueError, TypeError, MlopsError) as e:
        raise InventoryError(_where(path, f"{e}.")) from None
    groups = doc.get("group", {})
    if not isinstance(groups, dict):
        raise InventoryError(_where(path, "[group.NAME] tables expected."))
    for g, gs in groups.items():
        check_device_name(g)
        if not isinstance(gs, dict) or set(gs) - GROUP_KEYS:
            raise InventoryError(
                _where(path, f"[group.{g}] takes only {', '.join(sorted(GROUP_KEYS))}.")
            )
        if "pin" in gs:
            gs["pin"] = _check_ref(path, f"group {g}", gs["pin"])
    raw_devices = doc.get("device", [])
    if not isinstance(raw_devices, list):
        raise InventoryError(_where(path, "devices are [[device]] tables."))
    devices: list[Device] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_devices):
        where = f"device {raw.get('name', f'#{i + 1}')!r}"
        bad = set(raw) - DEVICE_KEYS
        if bad:
            raise InventoryError(
                _where(path, f"{where} has unknown key(s) {', '.join(sorted(bad))}.")
            )
        merged = {**defaults, **raw}
        name = check_device_name(merged.get("name"))
        if name in seen:
            raise InventoryError(_where(path, f"device {name!r} is listed twice."))
        seen.add(name)
        host = merged.get("host")
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise InventoryError(_where(path, f'{where} needs host = "ADDRESS".'))
        runtime = merged.get("runtime", "process")
        if runtime not in RUNTIMES:
            raise InventoryError(
                _where(path, f"{where} runtime {runtime!r} is not known; use process or docker.")
            )
        root = merged.get("root", "/opt/mlops-edge")
        if not isinstance(root, str) or not root.startswith("/") or ".." in root.split("/"):
            raise InventoryError(
                _where(path, f"{where} root must be an absolute path on the device, no '..'.")
            )
        dgroups = merged.get("groups", [])
        if not isinstance(dgroups, list) or not all(isinstance(g, str) for g in dgroups):
            raise InventoryError(_where(path, f"{where} groups must be a list of names."))
        for g in dgroups:
            check_device_name(g)
        tags = merged.get("tags", {})
        if not isinstance(tags, dict):
            raise InventoryError(_where(path, f'{where} tags must be a table (k = "v").'))
        if "known_host" not in merged and "known_hosts" not in merged:
            raise InventoryError(
                _where(
                    path,
                    f"{where} has no known_hosts file or known_host entry: host keys are always "
                    'verified. Add known_hosts = "fleet_known_hosts" to [defaults] with the '
                    "device's line (`ssh-keyscan -p PORT HOST`, checked against the key on the "
                    "device itself).",
                )
            )
        group_pin = next((groups[g]["pin"] for g in dgroups if "pin" in groups.get(g, {})), None)
        devices.append(
            Device(
                name=name,
                host=host,
                port=_int(path, where, "port", merged.get("port", 22), 1, 65535),
                user=str(merged.get("user", "root")),
                key=_resolve_file(ws_root, merged["key"], path, "key") if "key" in merged else None,
                known_hosts=_resolve_file(ws_root, merged["known_hosts"], path, "known_hosts")
                if "known_hosts" in merged
                else None,
                known_host=_where_known_host(path, where, merged["known_host"])
                if "known_host" in merged
                else None,
                runtime=runtime,
                root=root.rstrip("/") or "/",
                groups=tuple(dgroups),
                tags={str(k): str(v) for k, v in tags.items()},
                pin=_check_ref(path, where, raw["pin"]) if "pin" in raw else None,
                hold=bool(raw.get("hold", False)),
                python=str(merged.get("python", "python3")),
                serve_port=_int(
                    path, where, "serve_port", merged.get("serve_port", 8080), 1, 65535
                ),
                keep=_int(path, where, "keep", merged.get("keep", 2), 2, 20),
                link=merged.get("link"),
                group_pin=group_pin,
                group_hold=any(groups.get(g, {}).get("hold") for g in dgroups),
            )
        )
    return Fleet(
        path=path,
        devices=tuple(devices),
        groups=groups,
        parallel=_int(path, "[fleet]", "parallel", settings.get("parallel", 8), 1, 256),
        per_link=_int(path, "[fleet]", "per_link", settings.get("per_link", 4), 1, 256),
        connect_timeout=float(settings.get("connect_timeout", 15.0)),
        gate=gate,
    )


def load(ws_root: Path) -> Fleet:
    path = Path(ws_root) / FILE
    if not path.exists():
        raise MlopsError(
            f"{path} does not exist; `mlops fleet add NAME --host HOST` starts one, or write it "
            "(see `mlops fleet --help`)."
        )
    return parse(path.read_text(encoding="utf-8"), path, Path(ws_root))


# -- editing: only the lines a command owns ------------------------------------------------

_HEADER = re.compile(r"^\s*\[")


def _blocks(lines: list[str]) -> list[tuple[int, int, str | None]]:
    """(start, end, device name) of every [[device]] block."""
    out = []
    starts = [i for i, ln in enumerate(lines) if _HEADER.match(ln)]
    for j, s in enumerate(starts):
        e = starts[j + 1] if j + 1 < len(starts) else len(lines)
        if lines[s].strip().startswith("[[device]]"):
            name = None
            for ln in lines[s + 1 : e]:
                m = re.match(r"""^\s*name\s*=\s*["']([^"']*)["']""", ln)
                if m:
                    name = m.group(1)
            out.append((s, e, name))
    return out


def _quote(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_quote(x) for x in v) + "]"
    s = str(v)
    if any(c in s for c in '"\\\n'):
        raise MlopsError(f"{s!r} cannot be written to {FILE}: no quotes, backslashes or newlines.")
    return f'"{s}"'


def _write(ws_root: Path, text: str) -> Fleet:
    path = Path(ws_root) / FILE
    fleet = parse(text, path, Path(ws_root))  # refuse to write what would not load
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return fleet


def _text(ws_root: Path) -> str:
    path = Path(ws_root) / FILE
    return path.read_text(encoding="utf-8") if path.exists() else ""


NEW_FILE = """\
# Edge devices for `mlops fleet` (see plugins/mlops-edge-ssh/README.md).
# Host keys are always verified: put each device's line in fleet_known_hosts
# (`ssh-keyscan -p PORT HOST`, compared with the key shown on the device itself).
[defaults]
user = "root"
known_hosts = "fleet_known_hosts"
runtime = "process"
root = "/opt/mlops-edge"
"""


def add_device(ws_root: Path, name: str, host: str, **keys: Any) -> Fleet:
    check_device_name(name)
    text = _text(ws_root)
    if any(n == name for _, _, n in _blocks(text.splitlines())):
        raise MlopsError(
            f"Device {name!r} is already in {FILE}; `mlops fleet remove {name}` first."
        )
    if not text.strip():
        text = NEW_FILE
    block = ["", "[[device]]", f"name = {_quote(name)}", f"host = {_quote(host)}"]
    for k, v in keys.items():
        if v is None or v == () or v == []:
            continue
        if k not in DEVICE_KEYS:
            raise MlopsError(f"{k} is not a device key.")
        block.append(f"{k} = {_quote(v)}")
    new = text.rstrip("\n") + "\n" + "\n".join(block) + "\n"
    return _write(ws_root, new.lstrip("\n"))


def remove_device(ws_root: Path, name: str) -> Fleet:
    text = _text(ws_root)
    lines = text.splitlines(keepends=True)
    for s, e, n in _blocks([ln.rstrip("\n") for ln in lines]):
        if n == name:
            return _write(ws_root, "".join(lines[:s] + lines[e:]))
    raise MlopsError(f"No device {name!r} in {FILE}.")


def set_key(ws_root: Path, scope: str, name: str, key: str, value: Any) -> Fleet:
    """Set (or with value None remove) `key` in device `name`'s block, or in
    [group.NAME] when scope is 'group'."""
    text = _text(ws_root)
    lines = [ln.rstrip("\n") for ln in text.splitlines()]
    if scope == "device":
        spans = [(s, e) for s, e, n in _blocks(lines) if n == name]
        if not spans:
            raise MlopsError(f"No device {name!r} in {FILE}.")
        s, e = spans[0]
    else:
        check_device_name(name)
        known = sorted({g for d in load(ws_root).devices for g in d.groups})
        header = [i for i, ln in enumerate(lines) if ln.strip() == f"[group.{name}]"]
        # a [group.NAME] table no device names can still be cleaned up
        if name not in known and (value is not None or not header):
            raise MlopsError(
                f"No device is in group {name!r}"
                + (f"; groups: {', '.join(known)}" if known else "; no device has groups yet")
                + ". Add the group to devices' `groups` in fleet.toml first."
            )
        if not header:
            if value is None:
                return load(ws_root)
            lines += ["", f"[group.{name}]"]
            header = [len(lines) - 1]
        s = header[0]
        nxt = [i for i in range(s + 1, len(lines)) if _HEADER.match(lines[i])]
        e = nxt[0] if nxt else len(lines)
    body = [i for i in range(s + 1, e) if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i])]
    if value is None:
        for i in reversed(body):
            del lines[i]
        e -= len(body)
        if scope == "group" and not any(ln.strip() for ln in lines[s + 1 : e]):
            # an emptied [group.NAME] table goes too; no doubled blank line is left
            del lines[s:e]
            if s > 0 and not lines[s - 1].strip() and (s == len(lines) or not lines[s].strip()):
                del lines[s - 1]
    elif body:
        lines[body[0]] = f"{key} = {_quote(value)}"
    else:
        end = e
        while end > s + 1 and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, f"{key} = {_quote(value)}")
    return _write(ws_root, "\n".join(lines) + "\n")
