"""A Docker engine of a test device's own: a dockerd (and the containerd it starts) inside
the device's network namespace, listening on ``<device root>/docker.sock`` (the socket the
docker runtime's ``device_docker(root)`` picks on a device).

``nsenter --net=/var/run/netns/<ns>`` (not ``ip netns exec``: that remounts /sys, which
breaks dockerd) so ``--network host`` containers share the device's loopback. Its data,
exec root and containerd live under a short folder in /tmp (unix socket paths are limited
to 107 bytes). ``stop()`` removes its containers, stops dockerd (its containerd goes with
it), kills what is left, and unmounts everything mounted under its folders (the nsfs mounts of its
network sandboxes, under its exec root, would keep the device's namespace alive)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import netdevices
from tests.docker_engine import mounts_under


class DeviceDocker:
    def __init__(self, device: netdevices.Device) -> None:
        self.device = device
        self.sock = Path(device.root) / "docker.sock"
        self.state = Path(tempfile.mkdtemp(prefix="mled-", dir="/tmp"))
        self.data = self.state / "data"
        self.exec_root = self.state / "exec"
        self.pidfile = self.state / "dockerd.pid"
        self.log = self.state / "dockerd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, timeout=timeout
        )

    def start(self, timeout: float = 60) -> DeviceDocker:
        if Path("/run/containerd/containerd.sock").exists():
            raise RuntimeError(
                "a system containerd runs here: the device's dockerd would use it, and its "
                "containers would get the host's network instead of the device's"
            )
        if len(str(self.sock)) > 100:
            raise RuntimeError(f"{self.sock} is too long for a unix socket")
        Path(self.device.root).mkdir(parents=True, exist_ok=True)
        self.sock.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{self.device.ns}",
                    "dockerd",
                    "--data-root",
                    str(self.data),
                    "--exec-root",
                    str(self.exec_root),
                    "--pidfile",
                    str(self.pidfile),
                    "-H",
                    self.host,
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-masq=false",
                    "--userland-proxy=false",
                    "--storage-driver=overlay2",
                    "--cgroup-parent",
                    f"/mlops-edge-{self.device.ns}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.cli("version", "--format", "{{.Server.Version}}", timeout=10).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"the device's dockerd did not start:\n{tail}")
            time.sleep(0.2)
        return self

    def __enter__(self) -> DeviceDocker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _mounts(self) -> list[str]:
        """Mount points under its folders (overlays, shm, the nsfs of its network
        sandboxes under <exec-root>/netns), deepest first. /run/docker/netns belongs to the
        host's engine (exec root /var/run/docker) and is never touched."""
        return sorted(mounts_of(self.state), key=len, reverse=True)

    def stop(self) -> None:
        """Remove its containers, stop it, unmount what it mounted. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.cli("ps", "-aq", timeout=20).stdout.split()
            if ids:
                self.cli("rm", "-f", *ids, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # whatever it left in the namespace (a shim, a container process)
        left = [p for p in self.device.pids_in_namespace() if _under(p, self.state)]
        netdevices.kill_pids(left)
        for point in self._mounts():
            subprocess.run(["umount", "-l", point], capture_output=True)
        self.sock.unlink(missing_ok=True)
        self.proc = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.state)


def _under(pid: int, state: Path) -> bool:
    """Whether a process belongs to this engine (its command line names its folder)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return str(state) in cmd


mounts_of = mounts_under  # the mounts a device's engine left under its state folder


def newer_layer(layer, work: Path):
    """`layer` plus one more file in mlops_console (as a newer console would ship): a
    RuntimeLayer whose image differs from `layer`'s in its top layer only."""
    import tarfile

    from mlops_edge_ssh import layers

    work.mkdir(parents=True, exist_ok=True)
    tar2 = work / f"newer-{layer.sha256[:12]}.tar"
    shutil.copyfile(layer.path, tar2)
    marker = work / "edge_marker.py"
    marker.write_text("NEWER = True\n")
    with tarfile.open(tar2, "a") as tar:
        info = tar.gettarinfo(str(marker), "site/mlops_console/edge_marker.py")
        info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, 0o644
        with marker.open("rb") as f:
            tar.addfile(info, f)
    return layers.RuntimeLayer(
        tar2, layers._sha256(tar2), tar2.stat().st_size, layer.platform, layer.packages
    )
