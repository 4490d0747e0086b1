# ruff: noqa: UP031, SIM115 - runs on the device: Python 3.8+, standard library only
"""The device side: one stdlib-only script the controller copies to each device.

It runs as `python3 -I ROOT/bin/agent-<sha>.py ROOT COMMAND [ARGS]` and answers one JSON
document on stdout. It never fetches anything: the controller sends the objects first.
Python 3.8 or newer, standard library only, so it runs before any runtime is installed.

Layout under ROOT (0700 dirs, 0600 files):
    objects/<sha256>            content-addressed files, verified when they arrived
    runtime/<sha256>/site/      an extracted runtime layer (the server's packages); a
                                version may need several (its dependencies, its console)
    versions/<id>/              a model version: hard links to objects (no copy)
    versions/<id>.json          what it is: model, version, digest
    versions/<id>.serve.json    how to start that version's server (from the controller)
    current, previous           symlinks into versions/, replaced atomically
    run/serve.json              how to start a version that has no .serve.json of its own
    run/server.json             what the supervisor runs now (pid, version, restarts)
    run/supervisor.json         the supervisor (pid, the agent it runs)
    logs/server.log, logs/predlog/
"""

import hashlib
import json
import os
import shutil
import signal
import socket
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
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open("/proc/%d/stat" % int(pid)) as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def proc_start(pid):
    """When PID started (field 22 of /proc/PID/stat, in clock ticks since boot), or None
    where there is no /proc: recorded with a pid, so a reused pid is not taken for it."""
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def alive(pid, start=None):
    """PID runs, is no zombie and (when `start` was recorded) is the process that was."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    fields = proc_stat(pid)
    if fields is None:  # no /proc: kill 0 is all there is
        return True
    if fields[0] == "Z":  # a zombie child of a dead supervisor is not alive
        return False
    return start is None or len(fields) <= 19 or fields[19] == str(start)


def alive_record(doc):
    """Whether the process a run/*.json record names is still that process."""
    return alive(doc.get("pid"), doc.get("pid_start"))


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
            if name.endswith(".json") and not name.endswith(".serve.json"):
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
    state["alive"] = alive_record(state)
    state["supervisor"] = alive_record(sup)
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


def runtimes():
    """The runtime layers extracted whole (not a leftover <sha>.tmp of a failed one)."""
    try:
        names = os.listdir(p("runtime"))
    except OSError:
        return []
    return sorted(n for n in names if is_sha(n) and os.path.isdir(p("runtime", n, "site")))


def is_sha(text):
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def runtime_shas(value):
    """The runtime layers a version needs, in order (the first is {runtime}), from what a
    controller sent: a list of shas, or one string of them separated by spaces (an older
    controller sends one sha); none for "" or None."""
    if not value:
        return []
    if isinstance(value, str):
        return value.split()
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def check_runtimes(value):
    """runtime_shas(value), each a sha256 (so no name leaves runtime/), else fail."""
    if value and not isinstance(value, (str, list)):
        fail("runtime must be a list of sha256s or one string of them, not %r" % (value,))
    shas = runtime_shas(value)
    bad = [s for s in shas if not is_sha(s)]
    if bad or (isinstance(value, list) and len(shas) != len(value)):
        fail("runtime layer %r is not a sha256" % (bad[0] if bad else value,))
    return shas


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
            "runtimes": runtimes(),
            "versions": versions(),
            "current": link_target("current"),
            "previous": link_target("previous"),
            "server": server,
            "server_rss": rss(server.get("pid")) if server.get("alive") else None,
        }
    )


def cmd_install(args):
    """install ID MODEL VERSION DIGEST [RUNTIME_SHA ...]: extract the runtime layers the
    version needs (each once), hard-link the version's objects.

    A folder that exists already (it may be served: `current` or `previous`) is never
    removed or replaced: what it lacks is linked in, one file at a time, atomically."""
    vid, model, version, digest = args[:4]
    shas = check_runtimes(" ".join(args[4:]))
    runtime = shas or None
    check_version_id(vid)
    ensure_dirs()
    for sha in shas:
        install_runtime(sha)
    final = p("versions", vid)
    meta_path = p("versions", vid + ".json")
    if os.path.isdir(final) and os.path.exists(meta_path):
        meta = read_json(meta_path, {}) or {}
        if runtime and runtime_shas(meta.get("runtime")) != shas:
            # the same version again with other layers (a newer console): served with those
            meta["runtime"] = runtime
            write_json(meta_path, meta)
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
    files = sorted(manifest["files"].items())
    for name, _fmeta in files:
        if "/" in name or name.startswith(".") or name == "bundle.json":
            fail("bundle file name %r is not allowed" % name)
    wanted = [(name, fmeta["sha256"], fmeta["size"]) for name, fmeta in files]
    wanted.append(("bundle.json", digest, len(raw)))
    if os.path.isdir(final) and not os.path.islink(final):
        repaired = repair_version(final, wanted)
    else:
        build_version(final, wanted)
        repaired = None
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
    doc = {"ok": True, "id": vid, "installed": True}
    if repaired is not None:
        doc["repaired"] = repaired
    out(doc)


def check_version_id(vid):
    if not vid or "/" in vid or vid.startswith(".") or vid.endswith((".tmp", ".serve")):
        fail("version id %r is not allowed" % vid)


def has_content(path, sha, size):
    """Whether `path` is a regular file holding the object `sha` (its link, or a copy)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not os.path.isfile(path) or os.path.islink(path) or st.st_size != size:
        return False
    try:
        if os.path.samefile(path, p("objects", sha)):
            return True
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == sha


def object_missing(sha, size):
    src = p("objects", sha)
    return not os.path.isfile(src) or os.path.getsize(src) != size


def build_version(final, wanted):
    """A new version folder: built under a temporary name, renamed into place."""
    missing = [sha for _name, sha, size in wanted if object_missing(sha, size)]
    if missing:
        fail("objects missing: %s" % ", ".join(m[:12] for m in missing), missing=missing)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    for name, sha, _size in wanted:
        os.link(p("objects", sha), os.path.join(tmp, name))
    if os.path.lexists(final):  # a stray file or link where the folder goes
        os.unlink(final)
    os.rename(tmp, final)


def repair_version(final, wanted):
    """Link into an existing version folder the files it lacks (or holds wrong), each
    under a temporary name renamed over: the folder stays, and so does its server."""
    todo = [
        (name, sha, size)
        for name, sha, size in wanted
        if not has_content(os.path.join(final, name), sha, size)
    ]
    missing = [sha for _name, sha, size in todo if object_missing(sha, size)]
    if missing:
        fail("objects missing: %s" % ", ".join(m[:12] for m in missing), missing=missing)
    for name, sha, _size in todo:
        tmp = os.path.join(final, ".%s.tmp" % name)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        os.link(p("objects", sha), tmp)
        os.replace(tmp, os.path.join(final, name))
    fsync_dir(final)
    return [name for name, _sha, _size in todo]


def install_runtime(sha):
    final = p("runtime", sha)
    if os.path.isdir(os.path.join(final, "site")):
        return
    obj = p("objects", sha)
    if not os.path.exists(obj):
        fail("runtime layer %s is not on the device; send it first" % sha[:12])
    tmp = final + ".tmp"
    with tarfile.open(obj) as tf:
        links = check_layer(sha, tf.getmembers())
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o700)
        try:
            if hasattr(tarfile, "data_filter"):  # 3.12+ (and the fixed 3.8-3.11 releases)
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    top = os.path.realpath(tmp)
    for name in links:  # where the links resolve on disk, chains of links included
        if not within(os.path.realpath(os.path.join(tmp, name)), top):
            shutil.rmtree(tmp, ignore_errors=True)
            fail("runtime layer %s links %r outside the layer" % (sha[:12], name))
    for dirpath, _dirnames, filenames in os.walk(tmp):  # 0700 / 0600 (0700 if executable)
        os.chmod(dirpath, 0o700)
        for n in filenames:
            f = os.path.join(dirpath, n)
            if not os.path.islink(f):
                os.chmod(f, 0o700 if os.stat(f).st_mode & 0o100 else 0o600)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    os.unlink(obj)  # extracted: the tar is not kept twice


def within(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def check_layer(sha, members):
    """Refuse a layer member that could write or point outside the extraction folder:
    absolute or `..` names, devices and fifos, a name below a symlink, a symlink that is
    absolute or resolves outside, a hard link to anything but a file of the layer.
    Returns the symlinks' names (their targets are checked again once extracted)."""

    def refuse(m, why):
        fail("runtime layer %s holds %r (%s), which is not allowed" % (sha[:12], m.name, why))

    files, links, names = set(), set(), []
    for m in members:
        name = os.path.normpath(m.name)
        if m.name.startswith("/") or ".." in m.name.split("/"):
            refuse(m, "a path outside the layer")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            refuse(m, "a device, fifo or other special file")
        if m.issym():
            target = m.linkname
            resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
            if not target or target.startswith("/") or resolved.split("/")[0] == "..":
                refuse(m, "a symlink to %r, outside the layer" % target)
            if name in links:
                refuse(m, "a second symlink of that name")
            links.add(name)
        elif m.islnk() and os.path.normpath(m.linkname) not in files:
            refuse(m, "a hard link to %r, not a file of the layer" % m.linkname)
        elif m.isfile():
            files.add(name)
        names.append((m, name.split("/")))
    for m, parts in names:  # nothing is written through a link, nor replaces one
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in links and (i < len(parts) or not m.issym()):
                refuse(m, "a path through the symlink %r" % prefix)
    return sorted(links)


RESTORE_WAIT = 20  # the controller waits TIMEOUT + 30 s for a switch or rollback


def agent_path():
    return os.path.abspath(sys.argv[0])


def supervisor_record():
    return read_json(p("run", "supervisor.json"), {}) or {}


def signal_supervisor(sig):
    sup = supervisor_record()
    if alive_record(sup):
        os.kill(int(sup["pid"]), sig)
        return True
    return False


def ours(sup):
    """The supervisor runs this agent (an older agent's knows no per-version config)."""
    return alive_record(sup) and sup.get("agent") == agent_path()


def start_supervisor():
    """The watchdog that keeps `current` served; by systemd where the device has it. A
    supervisor of another agent (the agent was upgraded) is replaced."""
    sup = supervisor_record()
    if ours(sup):
        return "running"
    if alive_record(sup):
        stop_processes()
    agent = agent_path()
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
        subprocess.call(["systemctl", "enable", unit])
        subprocess.call(["systemctl", "restart", unit])  # starts it, or its new ExecStart
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
        if ours(supervisor_record()):
            return how
        time.sleep(0.05)
    fail("the supervisor did not start; see %s" % p("logs", "supervisor.log"))
    return how


def cmd_configure(args):
    """configure: read the server settings (JSON on stdin: argv, env, port, runtime (the
    layers' shas: a list, or one string of them) and, from newer controllers, version)
    into versions/<version>.serve.json, or without a version into run/serve.json (used for
    versions that have no config of their own)."""
    ensure_dirs()
    doc = json.loads(sys.stdin.read())
    argv = doc.get("argv") if isinstance(doc, dict) else None
    if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        fail("configure needs a JSON object whose argv is a non-empty list of strings")
    check_runtimes(doc.get("runtime"))
    vid = doc.get("version")
    if vid is None:
        write_json(p("run", "serve.json"), doc)
        out({"ok": True})
    check_version_id(vid)
    write_json(p("versions", vid + ".serve.json"), doc)
    out({"ok": True, "version": vid})


def serve_config(vid):
    """(config, its path) for starting `vid`: its own, else the device-wide one."""
    for path in (p("versions", vid + ".serve.json"), p("run", "serve.json")):
        cfg = read_json(path)
        if cfg:
            return cfg, os.path.relpath(path, ROOT)
    return None, None


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def ready(st, vid, since):
    """`vid`'s server started after `since`, runs, and accepts connections on its port
    (without a port: has stayed up for a second)."""
    if st.get("version_id") != vid or not st.get("alive") or st.get("started_at", 0) < since:
        return False
    if st.get("port"):
        return port_open(st["port"])
    return time.time() - st.get("started_at", 0) >= 1.0


def wait_serving(vid, since, timeout):
    deadline = time.time() + timeout
    while True:
        st = server_state()
        if ready(st, vid, since):
            again = server_state()  # the same process, still up after answering
            if again.get("pid") == st.get("pid") and again.get("alive"):
                return again
        if time.time() >= deadline:
            return None
        time.sleep(0.05)


def why_not_ready(st, vid):
    if st.get("version_id") != vid:
        return "the supervisor did not start it"
    if st.get("restarts") or not st.get("alive"):
        return "it exited (restarts: %s, last exit: %s)" % (
            st.get("restarts", 0),
            st.get("last_exit"),
        )
    if st.get("port"):
        return "it accepts no connections on port %s" % st["port"]
    return "it did not stay up"


def set_links(current, previous):
    set_link("previous", previous)
    set_link("current", current)
    fsync_dir(ROOT)


def serve(current, previous, timeout):
    """Point current/previous at these versions and have the supervisor serve `current`.
    If its server is not ready within `timeout`, the links are put back as they were, the
    version that was current is started again, and the answer is ok=false."""
    was_current, was_previous = link_target("current"), link_target("previous")
    since = time.time()
    set_links(current, previous)
    how = start_supervisor()
    if how == "running":  # a supervisor started just now serves `current` by itself: a
        signal_supervisor(signal.SIGHUP)  # reload would restart what it just started
    st = wait_serving(current, since - 1, timeout)
    if st is not None:
        return st, how
    reason = why_not_ready(server_state(), current)
    log = tail(40)
    if was_current == current:
        fail(
            "the server of %s did not become ready within %ss: %s" % (current, timeout, reason),
            log=log,
            current=current,
            previous=link_target("previous"),
            server=server_state(),
            restored=False,
        )
    set_links(was_current, was_previous)
    since = time.time()
    signal_supervisor(signal.SIGHUP)
    restored = None
    if was_current is None:
        then = "nothing was served before, nor is now"
    else:
        restored = wait_serving(was_current, since - 1, min(timeout, RESTORE_WAIT))
        if restored is not None:
            then = "%s is serving again" % was_current
        else:
            then = "%s did not become ready again either: %s" % (
                was_current,
                why_not_ready(server_state(), was_current),
            )
    fail(
        "the server of %s did not become ready within %ss: %s. current and previous are "
        "back to %s and %s; %s (the server log: logs/server.log)"
        % (current, timeout, reason, was_current, was_previous, then),
        log=log,
        current=was_current,
        previous=was_previous,
        server=restored or server_state(),
        restored=restored is not None,
    )
    return None, how


def cmd_switch(args):
    """switch ID [TIMEOUT]: make ID current (the old current becomes previous), and have
    the supervisor serve it; if it does not start, the old current serves again (ok=false).
    Idempotent: switching to what is current restarts nothing."""
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
    previous = cur if cur not in (None, vid) else link_target("previous")
    st, how = serve(vid, previous, timeout)
    out(
        {
            "ok": True,
            "current": vid,
            "previous": previous,
            "switched": True,
            "server": st,
            "supervisor": how,
        }
    )


def cmd_rollback(args):
    """rollback [TIMEOUT]: serve `previous` again (no transfer: it is still on the device);
    if it does not start, the links stay as they were and current serves again (ok=false)."""
    timeout = float(args[0]) if args else 30
    prev, cur = link_target("previous"), link_target("current")
    if prev is None:
        fail("there is no previous version on the device to roll back to")
    if not os.path.isdir(p("versions", prev)):
        fail("the previous version %s is no longer installed; nothing was changed" % prev)
    st, _how = serve(prev, cur, timeout)
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
            try:
                os.unlink(p("versions", v["id"] + ".serve.json"))
            except OSError:
                pass
            removed.append(v["id"])
    used = set()
    for vid in kept:
        for name in os.listdir(p("versions", vid)):
            used.add(os.stat(p("versions", vid, name)).st_ino)
    removed_runtimes = gc_runtimes(kept)
    freed = 0
    for name in os.listdir(p("objects")):
        path = p("objects", name)
        if os.path.isfile(path) and os.stat(path).st_ino not in used:
            freed += os.path.getsize(path)
            os.unlink(path)
    out(
        {
            "ok": True,
            "kept": kept,
            "removed": removed,
            "removed_runtimes": removed_runtimes,
            "freed": freed,
        }
    )


def needed_runtimes(kept):
    """The runtime layers the kept versions need (their own record and serve config, and
    the device-wide config), or None when one of them was installed without a record of
    its layers (then nothing is known to be unneeded)."""
    fallback = read_json(p("run", "serve.json"), {}) or {}
    needed = set(runtime_shas(fallback.get("runtime")))
    for vid in kept:
        meta = read_json(p("versions", vid + ".json"), {}) or {}
        if "runtime" not in meta:
            return None
        cfg = read_json(p("versions", vid + ".serve.json"), {}) or {}
        needed.update(runtime_shas(meta.get("runtime")))
        needed.update(runtime_shas(cfg.get("runtime")))
    return needed


def gc_runtimes(kept):
    """Remove the extracted runtime layers no kept version needs, and the leftovers of an
    extraction that failed an hour ago or more."""
    needed = needed_runtimes(kept)
    if needed is None:
        return []
    removed = []
    try:
        names = sorted(os.listdir(p("runtime")))
    except OSError:
        return []
    for name in names:
        path = p("runtime", name)
        if name.endswith(".tmp"):
            try:
                stale = time.time() - os.lstat(path).st_mtime > 3600
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
            continue
        if is_sha(name) and name not in needed:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def cmd_predlogs(args):
    """predlogs: the prediction log files with their sizes (for a resumable pull)."""
    base = p("logs", "predlog")
    files = []
    for dirpath, _, names in os.walk(base):
        for n in sorted(names):
            full = os.path.join(dirpath, n)
            files.append({"path": os.path.relpath(full, ROOT), "size": os.path.getsize(full)})
    out({"ok": True, "files": files})


def stop_processes():
    """Stop the supervisor and the server: TERM, then KILL what is still up after 10 s."""
    sup = supervisor_record()
    st = read_json(p("run", "server.json"), {}) or {}
    running = [d for d in (sup, st) if alive_record(d)]
    for d in running:
        try:
            os.kill(int(d["pid"]), signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(alive_record(d) for d in running):
        time.sleep(0.05)
    for d in running:
        if alive_record(d):
            try:
                os.kill(int(d["pid"]), signal.SIGKILL)
            except OSError:
                pass


def cmd_stop(args):
    """stop: stop the server and its supervisor for good (the device keeps its versions):
    a systemd unit is disabled and `current` removed, so neither a restart by systemd nor a
    reboot serves that version again; the next switch starts everything anew."""
    unit = "mlops-edge-%s.service" % hashlib.sha256(ROOT.encode()).hexdigest()[:10]
    if os.path.exists("/etc/systemd/system/" + unit) and which("systemctl"):
        with open(os.devnull, "w") as quiet:
            subprocess.call(["systemctl", "disable", "--now", unit], stdout=quiet, stderr=quiet)
    stop_processes()
    try:
        os.unlink(p("current"))
    except FileNotFoundError:
        pass
    fsync_dir(ROOT)
    out({"ok": True, "current": None})


# -- the supervisor ------------------------------------------------------------------------


class Supervisor:
    def __init__(self):
        self.child = None
        self.vid = None
        self.reload = False
        self.stopping = False
        self.restarts = 0
        self.last_exit = None
        self.exec_failed = False

    def start(self):
        """Start the server of the version `current` points to, with that version's
        serve config (run/serve.json for a version that has none)."""
        vid = link_target("current")
        if vid is None:
            return
        cfg, cfg_path = serve_config(vid)
        if not cfg:
            return
        meta = read_json(p("versions", vid + ".json"), {}) or {}
        shas = runtime_shas(meta.get("runtime") or cfg.get("runtime")) or [""]
        subst = {
            "{bundle}": os.path.realpath(p("current")),
            "{digest}": meta.get("digest", ""),
            "{root}": ROOT,
            "{runtime}": p("runtime", shas[0]),
            "{logs}": p("logs"),
        }
        for i, sha in enumerate(shas):  # {runtime.0} is {runtime}; {runtime.1} the next
            subst["{runtime.%d}" % i] = p("runtime", sha)
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
        record = {
            "version_id": vid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "port": cfg.get("port"),
            "serve": cfg_path,
        }
        try:
            self.child = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        except OSError as e:  # a bad argv: logged, and retried with the crash backoff
            log.write(("could not start %s: %s\n" % (argv[:1], e)).encode())
            self.child = None
            self.exec_failed = True
            record.update(pid=None, pid_start=None, started_at=time.time())
        else:
            self.exec_failed = False
            record.update(
                pid=self.child.pid, pid_start=proc_start(self.child.pid), started_at=time.time()
            )
        finally:
            log.close()
        self.vid = vid
        write_json(p("run", "server.json"), record)

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

    def pause(self, seconds):
        """Sleep, but not through a reload or a stop."""
        end = time.time() + seconds
        while time.time() < end and not (self.reload or self.stopping):
            time.sleep(0.05)

    def run(self):
        def on_hup(signum, frame):
            self.reload = True

        def on_term(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        me = os.getpid()
        write_json(
            p("run", "supervisor.json"),
            {
                "pid": me,
                "pid_start": proc_start(me),
                "agent": agent_path(),
                "started_at": time.time(),
            },
        )
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
            if self.child is not None and self.child.poll() is None:
                continue
            crashed = self.exec_failed
            if self.child is not None:
                self.last_exit = self.child.returncode
                self.child = None
                crashed = True
            if crashed:
                self.restarts += 1
                self.pause(min(backoff * self.restarts, 10))
                if self.reload or self.stopping:
                    continue
            self.start()
        self.stop_child()
        try:
            os.unlink(p("run", "supervisor.json"))
        except OSError:
            pass


def cmd_supervise(args):
    ensure_dirs()
    sup = supervisor_record()
    if alive_record(sup) and int(sup["pid"]) != os.getpid():
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
