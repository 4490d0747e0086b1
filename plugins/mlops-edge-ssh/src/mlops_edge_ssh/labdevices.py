"""Lab devices: N "edge devices" on the student's own machine, without root.

Each device is an OpenSSH `sshd` run as the current user (`/usr/sbin/sshd -D -e -f
CONFIG`, `UsePAM no`, 127.0.0.1 and a free port), with its own host key and its own device
root, all under the workspace's `.mlops/lab/fleet/`. The controller logs in with a lab key
made there (0600); `fleet.toml` names each device's host key (`known_host`), so host keys
are verified as on a real fleet. A device behind a flaky link is reached through a
`labrelay` subprocess that limits its rate and cuts its connections (seeded).

Every process is recorded by pid and start time in `devices.json` and stopped by pid
(`stop`): the sshd's, the relays, and the server and supervisor the fleet started on each
device (the agent's own `run/*.json` records).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_console.errors import MlopsError

SSHD = "/usr/sbin/sshd"
DEVICES_FILE = "devices.json"
STATE_DIRS = ("objects", "runtime", "versions")  # what a device holds, by name


class LabDeviceError(MlopsError):
    pass


def lab_dir(ws) -> Path:
    return Path(ws.state) / "lab" / "fleet"


def _private(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def missing_requirements() -> list[str]:
    """What this machine lacks to run lab devices (empty: it can)."""
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append(f"{SSHD} is not installed (Debian/Ubuntu: apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        missing.append("ssh-keygen is not installed (openssh-client)")
    if os.geteuid() == 0 and os.path.isdir("/run/systemd/system"):
        # the fleet's agent supervises with a systemd unit when it runs as root under
        # systemd: a lab device would install one into this machine's /etc/systemd
        missing.append(
            "as root on a machine run by systemd the devices' agent would install systemd "
            "units on this machine; run the lab as a normal user"
        )
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(rec: dict[str, Any] | None) -> bool:
    """Whether the process a record names (pid, start) is still that process."""
    if not rec or not rec.get("pid"):
        return False
    return start_time(int(rec["pid"])) == rec.get("start")


def stop_process(rec: dict[str, Any] | None, timeout: float = 10.0) -> bool:
    """Stop the recorded process (SIGTERM, then SIGKILL), only if it is still that one."""
    if not alive(rec):
        return False
    assert rec is not None
    pid = int(rec["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(rec):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child: reap it
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _record(proc: subprocess.Popen) -> dict[str, Any]:
    return {"pid": proc.pid, "start": start_time(proc.pid)}


@dataclass
class LabDevice:
    name: str
    sshd_port: int
    serve_port: int
    flaky: bool = False
    relay_port: int | None = None
    sshd: dict[str, Any] = field(default_factory=dict)
    relay: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The port the controller connects to: the relay's, for a flaky device."""
        return self.relay_port if self.flaky and self.relay_port else self.sshd_port


class LabDevices:
    """The devices of one workspace's lab (`.mlops/lab/fleet/`)."""

    def __init__(self, ws):
        self.ws = ws
        self.dir = lab_dir(ws)
        self.key = self.dir / "lab_ed25519"
        self.devices: list[LabDevice] = []
        self.workspace = ""
        self._read()

    # -- the record --------------------------------------------------------------------
    def _read(self) -> None:
        try:
            doc = json.loads((self.dir / DEVICES_FILE).read_text())
        except (OSError, ValueError):
            return
        self.workspace = doc.get("workspace", "")
        self.devices = [LabDevice(**d) for d in doc.get("devices", [])]

    def _save(self) -> None:
        doc = {"workspace": str(Path(self.ws.root).resolve()), "devices": []}
        doc["devices"] = [asdict(d) for d in self.devices]
        _write(self.dir / DEVICES_FILE, json.dumps(doc, indent=1))

    def device_dir(self, name: str) -> Path:
        return self.dir / "devices" / name

    def root(self, name: str) -> Path:
        return self.device_dir(name) / "root"

    def params_file(self, name: str) -> Path:
        return self.device_dir(name) / "link.json"

    def relay_log(self, name: str) -> Path:
        return self.device_dir(name) / "relay.log"

    def get(self, name: str) -> LabDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise LabDeviceError(
            f"No lab device {name!r}; this lab has {', '.join(d.name for d in self.devices)}."
        )

    # -- making and starting -----------------------------------------------------------
    def ensure(self, names: list[str], flaky: list[str]) -> list[LabDevice]:
        """The devices `names` running (made when missing, started when stopped), every
        flaky link clean, and fleet.toml written for them."""
        missing = missing_requirements()
        if missing:
            raise LabDeviceError("Lab devices cannot run here: " + "; ".join(missing) + ".")
        _private(self.dir)
        here = str(Path(self.ws.root).resolve())
        if self.workspace and self.workspace != here:
            # a copy of another workspace's lab (a class): its devices are not ours
            self.devices = []
        if [d.name for d in self.devices] != names or {
            d.name for d in self.devices if d.flaky
        } != set(flaky):
            self.stop()
            self.devices = []
        if not self.key.exists():
            self._keygen(self.key, "mlops-lab-controller")
        if not self.devices:
            shutil.rmtree(self.dir / "devices", ignore_errors=True)
            for name in names:
                self.devices.append(LabDevice(name, free_port(), free_port(), flaky=name in flaky))
        for d in self.devices:
            self._prepare(d)
            self._back_to_start(d.name)
            if d.flaky:
                _write(self.params_file(d.name), json.dumps({"rate_kbit": 0, "cut_chance": 0}))
            self._start(d)
        self._save()
        self.write_fleet_toml()
        return self.devices

    def _keygen(self, path: Path, comment: str) -> None:
        for p in (path, path.with_name(path.name + ".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        path.chmod(0o600)

    def _prepare(self, d: LabDevice) -> None:
        folder = _private(self.device_dir(d.name))
        _private(self.root(d.name))
        host_key = folder / "ssh_host_ed25519_key"
        if not host_key.exists():
            self._keygen(host_key, f"{d.name}-host")
        pub = self.key.with_name(self.key.name + ".pub").read_text().strip()
        _write(folder / "authorized_keys", pub + "\n")
        extra = "PerSourcePenalties no\n" if _sshd_version() >= (9, 8) else ""
        _write(
            folder / "sshd_config",
            f"""# lab device {d.name} (mlops-edge-ssh teaching lab)
Port {d.sshd_port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {host_key}
PidFile {folder / "sshd.pid"}
AuthorizedKeysFile {folder / "authorized_keys"}
AllowUsers {getpass.getuser()}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowAgentForwarding no
X11Forwarding no
Subsystem sftp internal-sftp
MaxStartups 50:30:100
MaxSessions 50
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel INFO
{extra}""",
        )

    def _start(self, d: LabDevice) -> None:
        folder = self.device_dir(d.name)
        if not alive(d.sshd):
            for attempt in range(3):
                if attempt or not _port_free(d.sshd_port):
                    d.sshd_port = free_port()
                    self._prepare(d)
                if os.geteuid() == 0:  # sshd as root wants its privilege-separation folder
                    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
                argv = [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")]
                d.sshd = _start_listening(argv, folder / "sshd.log", d.sshd_port, stdout=True)
                if d.sshd:
                    break
            else:
                raise LabDeviceError(
                    f"The sshd of lab device {d.name} did not start; its log: "
                    f"{folder / 'sshd.log'}."
                )
        if d.flaky and not alive(d.relay):
            for attempt in range(3):
                if attempt or d.relay_port is None or not _port_free(d.relay_port):
                    d.relay_port = free_port()
                argv = [
                    sys.executable,
                    "-m",
                    "mlops_edge_ssh.labrelay",
                    str(d.relay_port),
                    str(d.sshd_port),
                    str(self.params_file(d.name)),
                    str(self.relay_log(d.name)),
                ]
                d.relay = _start_listening(argv, folder / "relay.err", d.relay_port, stdout=False)
                if d.relay:
                    break
            else:
                raise LabDeviceError(
                    f"The flaky link of lab device {d.name} did not start; see "
                    f"{folder / 'relay.err'}."
                )

    # -- the devices' starting state ----------------------------------------------------
    def record_start(self) -> None:
        """Keep what each device holds now (objects, runtimes, versions, which version is
        current and previous) as its starting state, which `ensure` puts back: a lab's
        reset takes the versions rolled out since off the devices, so the next rollout
        sends them again, as it did the first time. Only names are kept: what a device
        holds is content-addressed, so nothing needs copying."""
        for d in self.devices:
            root = self.root(d.name)
            doc: dict[str, Any] = {
                sub: sorted(p.name for p in (root / sub).iterdir()) if (root / sub).is_dir() else []
                for sub in STATE_DIRS
            }
            for link in ("current", "previous"):
                doc[link] = os.readlink(root / link) if (root / link).is_symlink() else None
            _write(self.device_dir(d.name) / "start.json", json.dumps(doc, indent=1))

    def _back_to_start(self, name: str) -> None:
        """Put a stopped device's root back to its recorded starting state, if any."""
        d = self.get(name)
        if alive(d.sshd) or any(alive(rec) for _w, rec in self._device_side(name)):
            return  # running: a start of a lab that runs already changes nothing
        try:
            doc = json.loads((self.device_dir(name) / "start.json").read_text())
        except (OSError, ValueError):
            return
        root = self.root(name)
        for sub in STATE_DIRS:
            keep = set(doc.get(sub) or [])
            folder = root / sub
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name not in keep:
                    _remove(entry)
        for link in ("current", "previous"):
            path, target = root / link, doc.get(link)
            if path.is_symlink() or path.exists():
                path.unlink()
            if target:
                os.symlink(target, path)

    def set_link(self, name: str, params: dict[str, Any]) -> None:
        d = self.get(name)
        if not d.flaky:
            raise LabDeviceError(
                f"Lab device {name} has no flaky link; name it in the fleet.devices step's "
                "`flaky` list."
            )
        _write(self.params_file(name), json.dumps(params, sort_keys=True))

    def known_host(self, name: str) -> str:
        pub = self.device_dir(name) / "ssh_host_ed25519_key.pub"
        kind, key = pub.read_text().split()[:2]
        return f"{kind} {key}"

    def write_fleet_toml(self) -> Path:
        """fleet.toml for these devices: each device's host key, its own root and serve
        port; a short connect timeout (a lab's link is one machine's loopback)."""
        key = self.key.relative_to(Path(self.ws.root))
        lines = [
            "# The lab's devices (written by `mlops lab start`: lab devices on this machine)",
            "[defaults]",
            f'user = "{getpass.getuser()}"',
            f'key = "{key}"',
            'runtime = "process"',
            f'python = "{_device_python()}"',
            "",
            "[fleet]",
            "connect_timeout = 5",
        ]
        for d in self.devices:
            lines += [
                "",
                "[[device]]",
                f'name = "{d.name}"',
                'host = "127.0.0.1"',
                f"port = {d.port}",
                f'root = "{self.root(d.name)}"',
                f"serve_port = {d.serve_port}",
                f'groups = ["{"flaky" if d.flaky else "lab"}"]',
                f'known_host = "{self.known_host(d.name)}"',
            ]
        path = Path(self.ws.root) / "fleet.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- stopping ----------------------------------------------------------------------
    def processes(self) -> list[dict[str, Any]]:
        """Every live process of the lab's devices: sshd's, relays, device servers."""
        out = []
        for d in self.devices:
            for what, rec in (("sshd", d.sshd), ("relay", d.relay)):
                if alive(rec):
                    out.append({"device": d.name, "what": what, **rec})
            for what, rec in self._device_side(d.name):
                if alive(rec):
                    out.append({"device": d.name, "what": what, **rec})
        return out

    def _device_side(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """The supervisor and server the fleet started on the device (its agent records
        them in ROOT/run/*.json with the pid and its start time)."""
        out = []
        for what in ("supervisor", "server"):
            try:
                doc = json.loads((self.root(name) / "run" / f"{what}.json").read_text())
            except (OSError, ValueError):
                continue
            if doc.get("pid"):
                out.append((what, {"pid": int(doc["pid"]), "start": _int(doc.get("pid_start"))}))
        return out

    def stop(self) -> int:
        """Stop every process of the lab's devices, by pid; returns how many were running."""
        n = 0
        for d in self.devices:
            # the supervisor first, so it does not start the server again
            for _what, rec in self._device_side(d.name):
                n += stop_process(rec)
            n += stop_process(d.relay)
            n += stop_process(d.sshd)
            d.sshd, d.relay = {}, {}
        if self.devices:
            self._save()
        return n


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for sub in [path, *path.rglob("*")]:  # a device keeps versions read-only
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o700)
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_listening(argv: list[str], log: Path, port: int, stdout: bool) -> dict[str, Any]:
    """Start `argv` in a session of its own, its stderr (and stdout) appended to `log`; its
    record once it answers on `port`, else {} (and it is stopped)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out if stdout else subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )
    rec = _record(proc)
    if _wait_banner(port, proc):
        return rec
    stop_process(rec)
    return {}


def _wait_banner(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    """Until 127.0.0.1:port sends an SSH banner (True), or the process exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _sshd_version() -> tuple[int, int]:
    import re

    cp = subprocess.run([SSHD, "-V"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", cp.stderr + cp.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _device_python() -> str:
    """The devices' Python: the system's python3 (what a real device runs)."""
    return shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin") or "python3"
