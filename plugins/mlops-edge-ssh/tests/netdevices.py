"""Fake edge devices for the fleet tests: each one is a real OpenSSH ``sshd`` in its own
network namespace, reached from the host through a router namespace ("hub").

Topology of one lab (lab number ``N``, 1..63, unique among the labs alive on the machine)::

    host ns                      hub ns  (ip_forward=1)               device ns (one each)
    mlt<N>-<pid> 10.210.0.<4N+1> -- wan 10.210.0.<4N+2>
                                    br0 10.210.N.1/24 -- d<i> ==== eth0 10.210.N.<10+i>/24
                                                                   lo 127.0.0.1, sshd :22

The host only gets one veth and one route (10.210.N.0/24 via the hub); its own firewall and
qdiscs are never touched. Faults live where a real network has them:

* per device: ``link_down`` sets the hub's port ``d<i>`` down (a real cut, TCP sees
  silence), ``limit_rate`` puts a tbf on both ends of the device's cable (hub port egress and
  the device's eth0 egress), ``drop`` adds an iptables statistic DROP on the device's INPUT
  (eth0 only, so its loopback stays clean);
* shared (``DeviceLab.shared_rate``): one tbf on the hub's br0 egress (host -> devices) and
  one on its uplink egress (devices -> host), plus iptables statistic drops in the hub's
  FORWARD chain: every device shares that one link, like a plant behind one radio modem.

Names: namespaces ``mlt<N>-<pid>-hub`` and ``mlt<N>-<pid>-d<i>``, the host veth
``mlt<N>-<pid>``. A name whose pid no longer runs (or is this process but not a lab it
knows) is left over from a crashed run and is removed before a new lab is made; another
live run's lab is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
NAME_RE = re.compile(r"^mlt(\d+)-(\d+)(?:-(?:hub|d\d+))?$")
MAX_LABS = 63
SSH_PORT = 22
LOCK_PATH = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
LOCK_FILE = LOCK_PATH / "mlops-netdevices.lock"

_live_labs: set[DeviceLab] = set()
_live_lock = threading.Lock()


# --------------------------------------------------------------------------- helpers


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run one command on the host, output captured; raise with its stderr on failure."""
    cp = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> rc {cp.returncode}: {cp.stderr.strip()}")
    return cp


def missing_requirements() -> list[str]:
    """What this machine lacks for the device lab (empty: it can run)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not root (network namespaces need CAP_NET_ADMIN)")
    for tool in ("ip", "tc", "iptables", "ssh-keygen"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not installed")
    if not os.access(SSHD, os.X_OK):
        missing.append(f"{SSHD} not installed (openssh-server)")
    if not missing:
        cp = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if cp.returncode != 0:
            missing.append(f"ip netns unavailable: {cp.stderr.strip()}")
    return missing


def netns_list() -> list[str]:
    cp = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def our_namespaces(pid: int | None = None) -> list[str]:
    """Every namespace of this naming scheme (of one process if pid is given)."""
    out = []
    for name in netns_list():
        m = NAME_RE.match(name)
        if m and (pid is None or int(m.group(2)) == pid):
            out.append(name)
    return out


def netns_pids(ns: str) -> list[int]:
    cp = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in cp.stdout.split() if x.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_pids(pids: list[int], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL what is left after ``timeout``; wait until all are gone."""
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p) and not _is_zombie(p)]
            if not pids:
                return
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill_namespace(ns: str) -> None:
    """Kill every process in ``ns`` and delete it (its veths go with it)."""
    for _ in range(5):  # a dying session may fork once more: repeat until empty
        pids = netns_pids(ns)
        if not pids:
            break
        kill_pids(pids)
    sh("ip", "netns", "del", ns, check=False)


def _sshd_version() -> tuple[int, int]:
    cp = subprocess.run([SSHD, "-V"], capture_output=True, text=True)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", cp.stderr + cp.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def keygen(path: Path, comment: str) -> Path:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    sh("ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", str(path))
    return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Path):
        return json.dumps(str(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {v!r}")


def _tbf(dev: str, kbit: int, latency_ms: int, netns: str | None) -> None:
    burst = max(4096, kbit * 125 // 100)  # 10 ms worth, at least a few full frames
    pre = ["ip", "netns", "exec", netns] if netns else []
    sh(*pre, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit",
       "burst", str(burst), "latency", f"{latency_ms}ms")  # fmt: skip


def _tc_clear(dev: str, netns: str | None) -> None:
    pre = ["ip", "netns", "exec", netns] if netns else []
    sh(*pre, "tc", "qdisc", "del", "dev", dev, "root", check=False)


def _wait_banner(host: str, port: int, deadline: float, alive: Any) -> None:
    """Poll until ``host:port`` accepts TCP and sends an SSH banner (no fixed sleeps)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("sshd exited")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(1.0)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as e:
            last = e
        time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not accept SSH in time: {last}")


def cleanup_stale() -> list[str]:
    """Remove labs left by runs that died (their pid is gone, or is ours but unknown to us).
    Returns the namespace names removed. Another live run's lab is never touched."""
    mine = {ns for lab in list(_live_labs) for ns in lab.namespaces()}
    me = os.getpid()

    def stale(pid: int) -> bool:
        return not _pid_alive(pid) or pid == me

    removed = []
    for ns in our_namespaces():
        pid = int(NAME_RE.match(ns).group(2))  # type: ignore[union-attr]
        if ns not in mine and stale(pid):
            _kill_namespace(ns)
            removed.append(ns)
    mine_links = {lab.uplink for lab in list(_live_labs)}
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if not m:
            continue
        name = m.group(1)
        nm = NAME_RE.match(name)
        ours = nm and name == f"mlt{nm.group(1)}-{nm.group(2)}" and name not in mine_links
        if ours and stale(int(nm.group(2))):  # type: ignore[union-attr]
            sh("ip", "link", "del", name, check=False)
    return removed


# --------------------------------------------------------------------------- Device


class Device:
    """One fake edge device: an sshd in its own network namespace."""

    def __init__(self, lab: DeviceLab, index: int, name: str, base: Path) -> None:
        self.lab = lab
        self.index = index
        self.name = name
        self.ns = f"{lab.tag}-d{index}"
        self.host = f"10.210.{lab.number}.{10 + index}"
        self.port = SSH_PORT
        self.dir = base / name
        self.root = self.dir / "root"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.dir / "authorized_keys"
        self.sshd_config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"  # sshd's stderr (-e), appended across restarts
        self.hub_port = f"d{index}"  # its cable's end in the hub namespace
        self._proc: subprocess.Popen | None = None
        self._loss_chain = False

    def __repr__(self) -> str:
        return f"Device({self.name!r}, {self.host}, ns={self.ns})"

    # -- setup
    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, f"{self.name}-host")
        self.authorized_keys.write_text(self.lab.client_pub_line + "\n")
        extra = "PerSourcePenalties no\n" if self.lab.sshd_version >= (9, 8) else ""
        self.sshd_config.write_text(
            f"""# device {self.name} (mlops-edge-ssh test lab)
Port {self.port}
ListenAddress {self.host}
AddressFamily inet
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.authorized_keys}
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
ClientAliveInterval 0
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
{extra}"""
        )

    def _netns_setup(self, hub: str) -> None:
        sh("ip", "netns", "add", self.ns)
        nsx = ["ip", "-n", self.ns]
        sh("ip", "-n", hub, "link", "add", self.hub_port, "type", "veth",
           "peer", "name", "eth0", "netns", self.ns)  # fmt: skip
        sh("ip", "-n", hub, "link", "set", self.hub_port, "master", "br0", "up")
        sh(*nsx, "link", "set", "lo", "up")
        sh(*nsx, "addr", "add", f"{self.host}/24", "dev", "eth0")
        sh(*nsx, "link", "set", "eth0", "up")
        sh(*nsx, "route", "add", "default", "via", self.lab.lan_gateway)

    # -- sshd
    def start(self) -> None:
        """Start its sshd (idempotent) and wait until it answers. If the link is down, wait
        only until it listens inside the namespace."""
        if self._proc is not None and self._proc.poll() is None:
            return
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        proc = self._proc
        if proc is None:
            raise RuntimeError(f"{self.name}: sshd not started")
        deadline = time.monotonic() + timeout
        try:
            if self.link_is_up():
                _wait_banner(self.host, self.port, deadline, lambda: proc.poll() is None)
            else:
                while not self._listening():
                    if proc.poll() is not None:
                        raise RuntimeError("sshd exited")
                    if time.monotonic() > deadline:
                        raise TimeoutError("sshd did not listen in time")
                    time.sleep(0.02)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{self.name}: {e}; log {self.log}:\n{self.log_tail()}") from e

    def _listening(self) -> bool:
        if self._proc is None:
            return False
        try:
            tcp = Path(f"/proc/{self._proc.pid}/net/tcp").read_text()
        except OSError:
            return False
        return any(
            f.split()[1].endswith(f":{self.port:04X}") and f.split()[3] == "0A"
            for f in tcp.splitlines()[1:]
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, everything: bool = False) -> None:
        """Stop its sshd: the listener and every session sshd, so open connections drop
        (the device is "down"). Processes started over SSH keep running unless
        ``everything`` (a power-off: every process in the namespace is killed)."""
        if everything:
            kill_pids(self.pids_in_namespace())
        else:
            kill_pids([p for p in self.pids_in_namespace() if _comm(p).startswith("sshd")])
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def sshd_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rotate_host_key(self) -> None:
        """A new host key and sshd restarted with it; known_hosts is NOT updated, so a
        controller checking strictly must refuse the device (``lab.write_known_hosts()``
        accepts the new key)."""
        keygen(self.host_key, f"{self.name}-host-rotated")
        self.restart()

    def asyncssh_options(self, **kw: Any) -> dict[str, Any]:
        """Keyword arguments for ``asyncssh.connect(**dev.asyncssh_options())``: strict
        known_hosts, the lab's client key, no agent."""
        opts: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": "root",
            "known_hosts": str(self.lab.known_hosts),
            "client_keys": [str(self.lab.client_key)],
            "agent_path": None,
        }
        opts.update(kw)
        return opts

    def known_hosts_line(self) -> str:
        kind, key = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        host = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{host} {kind} {key}"

    # -- link faults
    def link_down(self) -> None:
        """Cut its cable (hub port down): packets to and from it vanish, no RST, no ICMP."""
        sh("ip", "-n", self.lab.hub, "link", "set", self.hub_port, "down")

    def link_up(self) -> None:
        sh("ip", "-n", self.lab.hub, "link", "set", self.hub_port, "up")

    def link_is_up(self) -> bool:
        cp = sh("ip", "-n", self.lab.hub, "-o", "link", "show", self.hub_port, check=False)
        m = re.search(r"<([^>]*)>", cp.stdout)
        return bool(m) and "UP" in m.group(1).split(",")

    def limit_rate(self, kbit: int, latency_ms: int = 200) -> None:
        """A tbf of ``kbit`` on both directions of its link; 0 clears it."""
        if kbit <= 0:
            self.clear_rate()
            return
        _tbf(self.hub_port, kbit, latency_ms, self.lab.hub)
        _tbf("eth0", kbit, latency_ms, self.ns)

    def clear_rate(self) -> None:
        _tc_clear(self.hub_port, self.lab.hub)
        _tc_clear("eth0", self.ns)

    def drop(self, probability: float) -> None:
        """Drop each packet arriving on its link with ``probability`` (iptables statistic,
        INPUT of eth0 inside its namespace); 0 clears."""
        ipt = ["ip", "netns", "exec", self.ns, "iptables", "-w"]
        if not self._loss_chain:
            sh(*ipt, "-N", "MLT_LOSS", check=False)
            sh(*ipt, "-I", "INPUT", "-i", "eth0", "-j", "MLT_LOSS")
            self._loss_chain = True
        sh(*ipt, "-F", "MLT_LOSS")
        if probability > 0:
            sh(*ipt, "-A", "MLT_LOSS", "-m", "statistic", "--mode", "random",
               "--probability", f"{probability:.4f}", "-j", "DROP")  # fmt: skip

    def dropped_packets(self) -> int:
        """Packets its loss rule has dropped so far."""
        cp = self.run("iptables", "-w", "-L", "MLT_LOSS", "-v", "-n", "-x")
        return sum(int(f.split()[0]) for f in cp.stdout.splitlines()[2:] if f.split())

    def clear_faults(self) -> None:
        self.link_up()
        self.clear_rate()
        if self._loss_chain:
            self.drop(0)

    # -- inspection
    def run(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess:
        """Run a command inside its namespace (output captured as text unless told)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], **kw)

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen:
        """Start a process inside its namespace (killed by stop(everything=True)/lab.stop)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kw)

    def pids_in_namespace(self) -> list[int]:
        return netns_pids(self.ns)

    def _teardown(self) -> None:
        _kill_namespace(self.ns)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        self._loss_chain = False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- DeviceLab


class DeviceLab:
    """``count`` devices behind one hub. ``with DeviceLab(tmp, 3) as lab: ...``"""

    def __init__(
        self, base: Path, count: int, prefix: str = "gw", shared_link: bool = False
    ) -> None:
        if not 1 <= count <= 240:
            raise ValueError("count must be 1..240")
        self.base = Path(base).resolve()
        self.count = count
        self.prefix = prefix
        self.shared_link = shared_link
        self.number = 0  # lab number N, given by start()
        self.devices: list[Device] = []
        self.client_key = self.base / "client_ed25519"
        self.known_hosts = self.base / "known_hosts"
        self.client_pub_line = ""
        self.sshd_version = (0, 0)
        self._started = False
        self._loss_rules = False

    # names, given once the lab has its number
    @property
    def tag(self) -> str:
        return f"mlt{self.number}-{os.getpid()}"

    @property
    def hub(self) -> str:
        return f"{self.tag}-hub"

    @property
    def uplink(self) -> str:  # the host's veth (<= 15 chars: mlt63-4194304)
        return self.tag

    @property
    def host_address(self) -> str:  # the controller's address towards the devices
        return f"10.210.0.{4 * self.number + 1}"

    @property
    def lan_gateway(self) -> str:
        return f"10.210.{self.number}.1"

    @property
    def subnet(self) -> str:
        return f"10.210.{self.number}.0/24"

    def namespaces(self) -> list[str]:
        if not self.number:
            return []
        return [self.hub] + [f"{self.tag}-d{i}" for i in range(self.count)]

    def __enter__(self) -> DeviceLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getitem__(self, i: int) -> Device:
        return self.devices[i]

    def __iter__(self):
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    # -- lifecycle
    def start(self) -> DeviceLab:
        if self._started:
            return self
        missing = missing_requirements()
        if missing:
            raise RuntimeError("device lab cannot run here: " + "; ".join(missing))
        self.base.mkdir(parents=True, exist_ok=True)
        self.sshd_version = _sshd_version()
        keygen(self.client_key, "mlops-edge-test-controller")
        self.client_pub_line = self.client_key.with_name(self.client_key.name + ".pub").read_text()
        self.client_pub_line = self.client_pub_line.strip()
        try:
            self._allocate_and_build()
            for i in range(self.count):
                self.devices[i]._prepare()
            self.write_known_hosts()
            for d in self.devices:
                d.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _allocate_and_build(self) -> None:
        LOCK_FILE.touch(exist_ok=True)
        with open(LOCK_FILE, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cleanup_stale()
            used = {int(NAME_RE.match(n).group(1)) for n in our_namespaces()}  # type: ignore[union-attr]
            addrs = sh("ip", "-o", "addr", "show").stdout + sh("ip", "route", "show").stdout
            for n in range(1, MAX_LABS + 1):
                if n in used or f"10.210.{n}." in addrs or f"10.210.0.{4 * n + 1}/" in addrs:
                    continue
                self.number = n
                break
            else:
                raise RuntimeError("no free lab number (63 labs alive?)")
            with _live_lock:
                _live_labs.add(self)
            self._started = True
            self.devices = [
                Device(self, i, f"{self.prefix}-{i + 1:02d}", self.base) for i in range(self.count)
            ]
            self._build_network()

    def _build_network(self) -> None:
        hub, up = self.hub, self.uplink
        n = self.number
        sh("ip", "netns", "add", hub)
        hx = ["ip", "-n", hub]
        sh("ip", "link", "add", up, "type", "veth", "peer", "name", "wan", "netns", hub)
        sh("ip", "addr", "add", f"{self.host_address}/30", "dev", up)
        sh("ip", "link", "set", up, "up")
        sh(*hx, "link", "set", "lo", "up")
        sh(*hx, "addr", "add", f"10.210.0.{4 * n + 2}/30", "dev", "wan")
        sh(*hx, "link", "set", "wan", "up")
        sh(*hx, "link", "add", "br0", "type", "bridge")
        sh(*hx, "addr", "add", f"{self.lan_gateway}/24", "dev", "br0")
        sh(*hx, "link", "set", "br0", "up")
        sh("ip", "netns", "exec", hub, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        sh("ip", "route", "add", self.subnet, "via", f"10.210.0.{4 * n + 2}", "dev", up)
        for d in self.devices:
            d._netns_setup(hub)

    def stop(self) -> None:
        """Kill every process in every namespace of the lab, delete the namespaces (their
        veths, bridge, qdiscs and iptables rules go with them) and the host's veth and
        route. Idempotent."""
        if not self._started:
            return
        for d in self.devices:
            d._teardown()
        _kill_namespace(self.hub)
        sh("ip", "link", "del", self.uplink, check=False)  # normally gone with the hub
        self._started = False
        with _live_lock:
            _live_labs.discard(self)

    # -- config for the controller
    def write_known_hosts(self) -> Path:
        """(Re)write known_hosts with every device's current host key."""
        self.known_hosts.write_text("".join(d.known_hosts_line() + "\n" for d in self.devices))
        return self.known_hosts

    def fleet_toml(self, **defaults: Any) -> str:
        """A fleet.toml for these devices; ``defaults`` override or add [defaults] keys
        (a value of None removes a key)."""
        d: dict[str, Any] = {
            "user": "root",
            "key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "runtime": "process",
            "root": "/opt/mlops-edge",
        }
        d.update(defaults)
        lines = ["[defaults]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None]
        half = (len(self.devices) + 1) // 2
        for dev in self.devices:
            group = "plant-a" if dev.index < half else "plant-b"
            lines += [
                "",
                "[[device]]",
                f"name = {_toml_value(dev.name)}",
                f"host = {_toml_value(dev.host)}",
                f"port = {dev.port}",
                f"root = {_toml_value(str(dev.root))}",
                f"groups = {_toml_value([group])}",
            ]
        return "\n".join(lines) + "\n"

    # -- the shared link
    def shared_rate(self, kbit: int, loss: float = 0.0, latency_ms: int = 200) -> None:
        """One link that every device shares: a tbf of ``kbit`` in each direction at the hub
        (br0 egress towards the devices, uplink egress towards the host) and, with ``loss``,
        a random drop of that share of the packets crossing the hub in each direction.
        kbit=0 and loss=0 clear. Needs ``shared_link=True``."""
        if not self.shared_link:
            raise RuntimeError("shared_rate needs DeviceLab(..., shared_link=True)")
        if kbit > 0:
            _tbf("br0", kbit, latency_ms, self.hub)
            _tbf("wan", kbit, latency_ms, self.hub)
        else:
            _tc_clear("br0", self.hub)
            _tc_clear("wan", self.hub)
        ipt = ["ip", "netns", "exec", self.hub, "iptables", "-w"]
        if not self._loss_rules:
            sh(*ipt, "-N", "MLT_LOSS", check=False)
            sh(*ipt, "-I", "FORWARD", "-j", "MLT_LOSS")
            self._loss_rules = True
        sh(*ipt, "-F", "MLT_LOSS")
        if loss > 0:
            sh(*ipt, "-A", "MLT_LOSS", "-m", "statistic", "--mode", "random",
               "--probability", f"{loss:.4f}", "-j", "DROP")  # fmt: skip

    def shared_dropped_packets(self) -> int:
        cp = sh("ip", "netns", "exec", self.hub, "iptables", "-w", "-L", "MLT_LOSS", "-v", "-n",
                "-x", check=False)  # fmt: skip
        return sum(int(f.split()[0]) for f in cp.stdout.splitlines()[2:] if f.split())


@atexit.register
def _stop_all() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.stop()
