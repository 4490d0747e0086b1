# ruff: noqa: UP031, SIM115 - runs on the device: Python 3.8+, standard library only
"""The device side: one stdlib-only script the controller copies to each device.

It runs as `python3 -I ROOT/bin/agent-<sha>.py ROOT COMMAND [ARGS]` and answers one JSON
document on stdout. It never fetches anything: the controller sends the objects first.
Python 3.8 or newer, standard library only, so it runs before any runtime is installed.

Layout under ROOT (0700 dirs, 0600 files):
    objects/<sha256>            content-addressed files, verified when they arrived
    runtime/<sha256>/site/      an extracted runtime layer (the server's packages)
    versions/<id>/              a model version: hard links to objects (no copy)
    versions/<id>.json          what it is: model, version, digest
    current, previous           symlinks into versions/, replaced atomically
    run/serve.json              how to start the server (from the controller)
    run/server.json             what the supervisor runs now (pid, version, restarts)
    run/supervisor.pid
    logs/server.log, logs/predlog/
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

ROOT = ""


def p(*parts):
    return os.path.join(ROOT, *parts)


def out(doc, code=0):
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def fail(message, **extra):
    doc = {"ok": False, "error": message}
    doc.update(extra)
    out(doc, 1)


def ensure_dirs():
    os.umask(0o077)
    for d in ("", "objects", "runtime", "versions", "run", "logs", "bin"):
        path = p(d)
        os.makedirs(path, mode=0o700, exist_ok=True)


def read_json(path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def write_json(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, sort_keys=True)
    os.replace(tmp, path)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie child of a dead supervisor is not alive
        with open("/proc/%d/stat" % int(pid)) as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def link_target(name):
    try:
        return os.path.basename(os.readlink(p(name)))
    except OSError:
        return None


def set_link(name, version_id):
    """Point ROOT/name at versions/<version_id> atomically (a new link renamed over)."""
    tmp = p(name + ".tmp")
    try:
        os.unlink(tmp)
    except OSError:
        pass
    if version_id is None:
        try:
            os.unlink(p(name))
        except OSError:
            pass
        return
    os.symlink(os.path.join("versions", version_id), tmp)
    os.replace(tmp, p(name))


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def meminfo():
    info = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return info


def libc():
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return name, version
    except (ValueError, OSError, AttributeError):
        return "musl", None


def os_name():
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return sys.platform


def versions():
    found = []
    try:
        for name in sorted(os.listdir(p("versions"))):
            if name.endswith(".json"):
                meta = read_json(p("versions", name), {})
                vid = name[:-5]
                if os.path.isdir(p("versions", vid)):
                    meta["id"] = vid
                    found.append(meta)
    except OSError:
        pass
    return found


def server_state():
    state = read_json(p("run", "server.json"), {}) or {}
    sup = read_json(p("run", "supervisor.json"), {}) or {}
    state["alive"] = alive(state.get("pid"))
    state["supervisor"] = alive(sup.get("pid"))
    state["supervisor_pid"] = sup.get("pid")
    return state


def rss(pid):
    try:
        with open("/proc/%d/status" % int(pid)) as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, TypeError):
        pass
    return None


def which(name):
    return shutil.which(name) is not None


def cmd_probe(args):
    st = os.statvfs(ROOT if os.path.isdir(ROOT) else "/")
    mem = meminfo()
    lname, lversion = libc()
    server = server_state()
    out(
        {
            "ok": True,
            "machine": os.uname().machine,
            "python": "%d.%d" % sys.version_info[:2],
            "python_full": sys.version.split()[0],
            "libc": lname,
            "libc_version": lversion,
            "os": os_name(),
            "kernel": os.uname().release,
            "cpus": os.cpu_count(),
            "mem_total": mem.get("MemTotal"),
            "mem_available": mem.get("MemAvailable"),
            "disk_free": st.f_bavail * st.f_frsize,
            "loadavg": os.getloadavg()[0],
            "time": time.time(),
            "systemd": os.path.isdir("/run/systemd/system"),
            "docker": which("docker"),
            "zstd": which("zstd"),
            "uid": os.getuid(),
            "runtimes": sorted(os.listdir(p("runtime"))) if os.path.isdir(p("runtime")) else [],
            "versions": versions(),
            "current": link_target("current"),
            "previous": link_target("previous"),
            "server": server,
            "server_rss": rss(server.get("pid")) if server.get("alive") else None,
        }
    )


def cmd_install(args):
    """install ID MODEL VERSION DIGEST [RUNTIME_SHA]: hard-link the version's objects."""
    vid, model, version, digest = args[:4]
    runtime = args[4] if len(args) > 4 else None
    ensure_dirs()
    if runtime:
        install_runtime(runtime)
    final = p("versions", vid)
    meta_path = p("versions", vid + ".json")
    if os.path.isdir(final) and os.path.exists(meta_path):
        out({"ok": True, "id": vid, "installed": False})
    manifest_obj = p("objects", digest)
    try:
        with open(manifest_obj, "rb") as fh:
            raw = fh.read()
    except OSError:
        fail("object %s (bundle.json) is not on the device; send it first" % digest[:12])
    if hashlib.sha256(raw).hexdigest() != digest:
        fail("object %s does not match its hash; it was removed, send it again" % digest[:12])
    manifest = json.loads(raw.decode())
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    missing = []
    for name, fmeta in sorted(manifest["files"].items()):
        src = p("objects", fmeta["sha256"])
        if not os.path.exists(src) or os.path.getsize(src) != fmeta["size"]:
            missing.append(fmeta["sha256"])
            continue
        if "/" in name or name.startswith("."):
            fail("bundle file name %r is not allowed" % name)
        os.link(src, os.path.join(tmp, name))
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        fail("objects missing: %s" % ", ".join(m[:12] for m in missing), missing=missing)
    os.link(manifest_obj, os.path.join(tmp, "bundle.json"))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    write_json(
        meta_path,
        {
            "model": model,
            "version": int(version),
            "digest": digest,
            "runtime": runtime,
            "installed_at": time.time(),
        },
    )
    fsync_dir(p("versions"))
    out({"ok": True, "id": vid, "installed": True})


def install_runtime(sha):
    final = p("runtime", sha)
    if os.path.isdir(os.path.join(final, "site")):
        return
    obj = p("objects", sha)
    if not os.path.exists(obj):
        fail("runtime layer %s is not on the device; send it first" % sha[:12])
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    with tarfile.open(obj) as tf:
        for m in tf.getmembers():
            if m.name.startswith("/") or ".." in m.name.split("/") or not (m.isfile() or m.isdir()):
                fail("runtime layer %s holds %r, which is not allowed" % (sha[:12], m.name))
        tf.extractall(tmp)
    for dirpath, _dirnames, filenames in os.walk(tmp):  # 0700 / 0600 (0700 if executable)
        os.chmod(dirpath, 0o700)
        for n in filenames:
            f = os.path.join(dirpath, n)
            if not os.path.islink(f):
                os.chmod(f, 0o700 if os.stat(f).st_mode & 0o100 else 0o600)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    os.unlink(obj)  # extracted: the tar is not kept twice


def signal_supervisor(sig):
    sup = read_json(p("run", "supervisor.json"), {}) or {}
    if alive(sup.get("pid")):
        os.kill(int(sup["pid"]), sig)
        return True
    return False


def start_supervisor():
    """The watchdog that keeps `current` served; by systemd where the device has it."""
    if signal_supervisor(0):
        return "running"
    agent = os.path.abspath(sys.argv[0])
    py = sys.executable or "python3"
    unit = None
    if os.path.isdir("/run/systemd/system") and os.getuid() == 0 and which("systemctl"):
        unit = "mlops-edge-%s.service" % hashlib.sha256(ROOT.encode()).hexdigest()[:10]
        path = "/etc/systemd/system/" + unit
        with open(path, "w") as fh:
            fh.write(
                "[Unit]\nDescription=mlops-console edge server (%s)\nAfter=network.target\n\n"
                "[Service]\nExecStart=%s -I %s %s supervise\nRestart=always\nRestartSec=2\n\n"
                "[Install]\nWantedBy=multi-user.target\n" % (ROOT, py, agent, ROOT)
            )
        subprocess.call(["systemctl", "daemon-reload"])
        subprocess.call(["systemctl", "enable", "--now", unit])
        how = "systemd"
    else:
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork():
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            log = os.open(
                p("logs", "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execv(py, [py, "-I", agent, ROOT, "supervise"])
        os.waitpid(pid, 0)
        how = "watchdog"
    deadline = time.time() + 10
    while time.time() < deadline:
        if signal_supervisor(0):
            return how
        time.sleep(0.05)
    fail("the supervisor did not start; see %s" % p("logs", "supervisor.log"))
    return how


def cmd_configure(args):
    """configure: read the server settings (JSON on stdin) into run/serve.json."""
    ensure_dirs()
    doc = json.loads(sys.stdin.read())
    write_json(p("run", "serve.json"), doc)
    out({"ok": True})


def wait_serving(vid, since, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = server_state()
        if st.get("version_id") == vid and st.get("alive") and st.get("started_at", 0) >= since:
            return st
        time.sleep(0.05)
    return None


def cmd_switch(args):
    """switch ID [TIMEOUT]: make ID current (the old current becomes previous), and have
    the supervisor serve it. Idempotent: switching to what is current restarts nothing."""
    vid = args[0]
    timeout = float(args[1]) if len(args) > 1 else 30
    ensure_dirs()
    if not os.path.isdir(p("versions", vid)):
        fail("version %s is not installed" % vid)
    cur = link_target("current")
    st = server_state()
    if cur == vid and st.get("alive") and st.get("version_id") == vid:
        out(
            {
                "ok": True,
                "current": vid,
                "previous": link_target("previous"),
                "switched": False,
                "server": st,
            }
        )
    since = time.time()
    if cur != vid:
        if cur is not None:
            set_link("previous", cur)
        set_link("current", vid)
        fsync_dir(ROOT)
    how = start_supervisor()
    signal_supervisor(signal.SIGHUP)
    st = wait_serving(vid, since - 1, timeout)
    if st is None:
        fail("the server did not start on %s within %ss" % (vid, timeout), log=tail(40))
    out(
        {
            "ok": True,
            "current": vid,
            "previous": link_target("previous"),
            "switched": True,
            "server": st,
            "supervisor": how,
        }
    )


def cmd_rollback(args):
    """rollback [TIMEOUT]: serve `previous` again (no transfer: it is still on the device)."""
    timeout = float(args[0]) if args else 30
    prev, cur = link_target("previous"), link_target("current")
    if prev is None:
        fail("there is no previous version on the device to roll back to")
    since = time.time()
    set_link("current", prev)
    set_link("previous", cur)
    fsync_dir(ROOT)
    start_supervisor()
    signal_supervisor(signal.SIGHUP)
    st = wait_serving(prev, since - 1, timeout)
    if st is None:
        fail("the server did not start on %s within %ss" % (prev, timeout), log=tail(40))
    out({"ok": True, "current": prev, "previous": cur, "server": st})


def tail(n):
    try:
        with open(p("logs", "server.log"), "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def cmd_logs(args):
    out({"ok": True, "log": tail(int(args[0]) if args else 100)})


def cmd_gc(args):
    """gc KEEP: remove versions beyond the KEEP newest that are neither current nor
    previous, and objects no kept version links to."""
    keep = int(args[0]) if args else 2
    protected = {link_target("current"), link_target("previous")}
    vs = sorted(versions(), key=lambda m: m.get("installed_at", 0), reverse=True)
    kept = [v["id"] for v in vs if v["id"] in protected]
    for v in vs:
        if len(kept) >= keep:
            break
        if v["id"] not in kept:
            kept.append(v["id"])
    removed = []
    for v in vs:
        if v["id"] not in kept:
            shutil.rmtree(p("versions", v["id"]), ignore_errors=True)
            os.unlink(p("versions", v["id"] + ".json"))
            removed.append(v["id"])
    used = set()
    for vid in kept:
        for name in os.listdir(p("versions", vid)):
            used.add(os.stat(p("versions", vid, name)).st_ino)
    freed = 0
    for name in os.listdir(p("objects")):
        path = p("objects", name)
        if os.path.isfile(path) and os.stat(path).st_ino not in used:
            freed += os.path.getsize(path)
            os.unlink(path)
    out({"ok": True, "kept": kept, "removed": removed, "freed": freed})


def cmd_predlogs(args):
    """predlogs: the prediction log files with their sizes (for a resumable pull)."""
    base = p("logs", "predlog")
    files = []
    for dirpath, _, names in os.walk(base):
        for n in sorted(names):
            full = os.path.join(dirpath, n)
            files.append({"path": os.path.relpath(full, ROOT), "size": os.path.getsize(full)})
    out({"ok": True, "files": files})


def cmd_stop(args):
    """stop: stop the supervisor and the server (the device keeps its versions)."""
    sup = read_json(p("run", "supervisor.json"), {}) or {}
    st = read_json(p("run", "server.json"), {}) or {}
    for pid in (sup.get("pid"), st.get("pid")):
        if alive(pid):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except OSError:
                pass
    deadline = time.time() + 10
    while time.time() < deadline and (alive(sup.get("pid")) or alive(st.get("pid"))):
        time.sleep(0.05)
    for pid in (sup.get("pid"), st.get("pid")):
        if alive(pid):
            os.kill(int(pid), signal.SIGKILL)
    out({"ok": True})


# -- the supervisor ------------------------------------------------------------------------


class Supervisor:
    def __init__(self):
        self.child = None
        self.vid = None
        self.reload = False
        self.stopping = False
        self.restarts = 0
        self.last_exit = None

    def start(self):
        cfg = read_json(p("run", "serve.json"))
        vid = link_target("current")
        if not cfg or vid is None:
            return
        meta = read_json(p("versions", vid + ".json"), {}) or {}
        subst = {
            "{bundle}": os.path.realpath(p("current")),
            "{digest}": meta.get("digest", ""),
            "{root}": ROOT,
            "{runtime}": p("runtime", meta.get("runtime") or cfg.get("runtime") or ""),
            "{logs}": p("logs"),
        }
        argv = []
        for a in cfg["argv"]:
            for k, v in subst.items():
                a = a.replace(k, v)
            argv.append(a)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": ROOT, "LANG": "C.UTF-8"}
        for k, v in (cfg.get("env") or {}).items():
            for s, r in subst.items():
                v = v.replace(s, r)
            env[k] = v
        log = open(p("logs", "server.log"), "ab")
        log.write(("\n--- %s starting %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), vid)).encode())
        log.flush()
        self.child = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        self.vid = vid
        write_json(
            p("run", "server.json"),
            {
                "pid": self.child.pid,
                "version_id": vid,
                "started_at": time.time(),
                "restarts": self.restarts,
                "last_exit": self.last_exit,
                "port": cfg.get("port"),
            },
        )

    def stop_child(self):
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(8)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.child = None

    def run(self):
        def on_hup(signum, frame):
            self.reload = True

        def on_term(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        write_json(p("run", "supervisor.json"), {"pid": os.getpid(), "started_at": time.time()})
        backoff = 0.5
        self.start()
        while not self.stopping:
            time.sleep(0.05)
            if self.reload:
                self.reload = False
                self.stop_child()
                self.restarts = 0
                self.start()
                continue
            if self.child is not None and self.child.poll() is not None:
                self.last_exit = self.child.returncode
                self.child = None
                self.restarts += 1
                time.sleep(min(backoff * self.restarts, 10))
                self.start()
            elif self.child is None and link_target("current") is not None:
                self.start()
        self.stop_child()
        try:
            os.unlink(p("run", "supervisor.json"))
        except OSError:
            pass


def cmd_supervise(args):
    ensure_dirs()
    sup = read_json(p("run", "supervisor.json"), {}) or {}
    if alive(sup.get("pid")) and int(sup["pid"]) != os.getpid():
        sys.exit(0)  # one supervisor per root
    Supervisor().run()


COMMANDS = {
    "probe": cmd_probe,
    "install": cmd_install,
    "configure": cmd_configure,
    "switch": cmd_switch,
    "rollback": cmd_rollback,
    "logs": cmd_logs,
    "gc": cmd_gc,
    "predlogs": cmd_predlogs,
    "stop": cmd_stop,
    "supervise": cmd_supervise,
}


def main(argv):
    global ROOT
    if len(argv) < 2 or argv[1] not in COMMANDS:
        fail("usage: agent.py ROOT {%s} [ARGS]" % "|".join(COMMANDS))
    ROOT = os.path.abspath(argv[0])
    os.umask(0o077)
    try:
        COMMANDS[argv[1]](argv[2:])
    except SystemExit:
        raise
    except Exception as e:  # one JSON answer, whatever happened
        fail("%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    main(sys.argv[1:])
