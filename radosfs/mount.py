"""`mount.radosfs`: option parsing, daemonizing once the mount is ready, signals, logging.

    mount.radosfs [SOURCE] MOUNTPOINT [-o OPT[,OPT...]] [-f]

It is called by mount(8) as `mount.radosfs none /mnt/ceph -o ...` (type `radosfs`) and as
`mount.fuse.radosfs ...` (type `fuse.radosfs`, what /proc/mounts shows), so `mount -t`,
/etc/fstab lines and `mount -o remount,ro|rw` work. Without -f it returns once the mount is
ready and keeps serving in the background; every failure before that is one line on stderr
and a non-zero exit. See docs/options.md and mount.radosfs(8).
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import faulthandler
import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time

from . import __version__

_BINDING_HELP = {
    "rados": "the Ceph bindings come from the distribution: apt install python3-rados "
             "python3-rbd, and make a venv with --system-site-packages",
    "rbd": "the Ceph bindings come from the distribution: apt install python3-rados "
           "python3-rbd, and make a venv with --system-site-packages",
    "pyfuse3": "pip install pyfuse3 (needs libfuse3-dev, pkg-config and gcc), or apt install "
               "python3-pyfuse3",
    "trio": "pip install trio, or apt install python3-trio",
}
try:
    import pyfuse3
    import rados  # noqa: F401 -- imported by the layers below; checked here, once
    import rbd  # noqa: F401
    import trio
except ImportError as _exc:
    if _exc.name not in _BINDING_HELP:
        raise
    raise SystemExit(f"mount.radosfs: python module {_exc.name!r} is missing for "
                     f"{sys.executable}: {_BINDING_HELP[_exc.name]}") from None

from .cache import PageCache
from .client.bridge import Bridge
from .client.connection import ClientConfig, ConnectError, Connection, open_cluster
from .operations import Operations
from .store.keys import IMAGE
from .options import HELP, KERNEL_FLAGS, MountOptions, OptionError, parse_options
from .tree.context import MountContext
from .tree.kinds import NodeKinds

log = logging.getLogger("radosfs")

# Where a background daemon logs when neither -o log= nor syslog nor the journal is there.
FALLBACK_LOG = "/var/log/radosfs.log"

READY_TIMEOUT = 30.0   # the parent waits this long for the daemon to report
# The bridge's deadline is op_timeout plus this: librados' own timeouts (set to op_timeout)
# normally answer first, so the bridge abandons only calls librados does not bound.
TIMEOUT_GRACE = 1.0
SHUTDOWN_TIMEOUT = 10.0  # Rados.shutdown() may wait for a cluster that is gone


class MountError(Exception):
    """A one-line reason the mount could not be made."""


def build_parser() -> argparse.ArgumentParser:
    epilog = "options (-o):\n" + "\n".join(f"  {k:<34} {v}" for k, v in HELP.items())
    p = argparse.ArgumentParser(
        prog="mount.radosfs", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount a Ceph cluster: pools as directories, RADOS objects and RBD "
                    "images as files. See mount.radosfs(8).", epilog=epilog)
    p.add_argument("source", nargs="?", default="none",
                   help="'none', or a client name (e.g. admin or client.backup); shown as "
                        "the mount's source")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="comma-separated mount options (below)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr")
    p.add_argument("--log", metavar="PATH", help="log file (the same as -o log=PATH)")
    p.add_argument("-V", "--version", action="version", version=f"radosfs {__version__}")
    # What mount(8) passes to helpers: accepted and ignored.
    p.add_argument("-n", "-s", "-v", dest="ignored", action="count", help=argparse.SUPPRESS)
    p.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    p.add_argument("-N", dest="namespace", help=argparse.SUPPRESS)
    return p


def resolve_options(args: argparse.Namespace) -> MountOptions:
    mo = MountOptions()
    if args.source not in ("none", "radosfs", "ceph", ""):
        mo.name = args.source if "." in args.source else f"client.{args.source}"
    mo = parse_options(args.options, mo)
    if args.log:
        mo.log = args.log
    if mo.conf is None:
        default = f"/etc/ceph/{mo.cluster}.conf"
        mo.conf = os.environ.get("CEPH_CONF") or default
        if mo.mon_host and not os.path.isfile(mo.conf):
            mo.conf = None          # mon_host= and a key: no conf file needed
    if mo.conf is not None and not os.path.isfile(mo.conf):
        raise MountError(f"ceph configuration {mo.conf} not found (use -o conf=PATH, or "
                         f"mon_host= with keyring= or secretfile=)")
    for what, path in (("keyring", mo.keyring), ("secretfile", mo.secretfile)):
        if path is None:
            continue
        if not os.path.exists(path):
            raise MountError(f"{what} {path} not found")
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise MountError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mo.log not in (None, "stderr", "syslog"):
        mo.log = os.path.abspath(mo.log)
        try:
            open(mo.log, "a").close()
        except OSError as exc:
            raise MountError(f"cannot open log file {mo.log}: {exc.strerror}") from None
    elif mo.log == "syslog" and not os.path.exists("/dev/log"):
        raise MountError("log=syslog: there is no syslog here (/dev/log is missing)")
    # The daemon changes to / before librados reads them.
    if mo.conf is not None:
        mo.conf = os.path.abspath(mo.conf)
    if mo.keyring is not None:
        mo.keyring = os.path.abspath(mo.keyring)
    if mo.secretfile is not None:
        mo.secretfile = os.path.abspath(mo.secretfile)
    return mo


def _clear_dead_mount(path: str) -> None:
    """A FUSE mount whose daemon is gone (killed) answers ENOTCONN: unmount it."""
    try:
        os.stat(path)
        return
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            return
    res = subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=30)
    if res.returncode != 0:
        raise MountError(f"mountpoint {path} is a dead mount (its daemon is gone); "
                         f"clear it with: fusermount3 -u {path}")


def keyring_warning(keyring: str | None) -> str | None:
    """A warning when the keyring file can be read by users other than its owner."""
    if keyring is None:
        return None
    try:
        mode = os.stat(keyring).st_mode
    except OSError:
        return None
    if mode & 0o044:
        return (f"keyring {keyring} is readable by {'others' if mode & 0o004 else 'its group'}"
                f" (mode {mode & 0o777:03o}): anyone who can read it can act as this user; "
                f"chmod 600 it")
    return None


def read_secret(path: str) -> str:
    """The key of a secretfile= (just the base64 key, as mount.ceph takes it; a keyring
    file works too). Never logged, never in a message."""
    try:
        text = open(path).read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MountError(f"cannot read secretfile {path}: "
                         f"{getattr(exc, 'strerror', None) or 'not text'}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("key") and "=" in line:
            line = line.split("=", 1)[1].strip()
        if line and not line.startswith(("[", "#", ";")) and " " not in line:
            return line
    raise MountError(f"secretfile {path} holds no key")


def client_config(mo: MountOptions) -> ClientConfig:
    return ClientConfig(conf=mo.conf, name=mo.name, keyring=mo.keyring,
                        connect_timeout=mo.connect_timeout, op_timeout=mo.op_timeout,
                        cluster=mo.cluster, mon_host=mo.mon_host,
                        key=read_secret(mo.secretfile) if mo.secretfile else None,
                        ceph_options=dict(mo.ceph))


def check_mountpoint(path: str) -> str:
    path = os.path.abspath(path)
    _clear_dead_mount(path)
    if not os.path.exists(path):
        raise MountError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"mountpoint {path} is busy (something is mounted there)")
    return path


def fuse_options(mo: MountOptions, source: str) -> set[str]:
    """What libfuse is given. The source is kept as the fsname (even `none`) so that
    mount(8) finds an fstab line mounted already: a second `mount -a` is a no-op."""
    opts = set(pyfuse3.default_options) - {"default_permissions"}
    opts |= {f"fsname={mo.fsname or source or 'none'}", f"subtype={mo.subtype}"}
    opts |= mo.fuse
    opts |= mo.kernel_flags()
    if "allow_other" in mo.fuse:
        opts.add("default_permissions")
    if mo.ro:
        opts.add("ro")
    if mo.debug:
        opts.add("debug")   # libfuse's request trace, to stderr (-f or log=stderr)
    return opts


class OneLineFormatter(logging.Formatter):
    """One line per event: newlines (tracebacks too) and other control characters are
    escaped, so a name with a newline or raw bytes cannot forge or break log lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.translate(_ESCAPES)


_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 9: "\\t", 127: "\\x7f"}


def _journal_stderr() -> bool:
    """Whether stderr is the systemd journal (JOURNAL_STREAM names its device:inode)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
        dev, ino = (int(x) for x in js.split(":"))
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def log_target(mo: MountOptions, foreground: bool) -> str:
    """Where the daemon logs: `stderr`, `syslog` or a path (see mount.radosfs(8))."""
    if mo.log:
        return mo.log
    if foreground or _journal_stderr():
        return "stderr"
    if os.path.exists("/dev/log"):
        return "syslog"
    return FALLBACK_LOG   # a background daemon's stderr is /dev/null: never log nowhere


def setup_logging(target: str, level: str | None, debug: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    fmt = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    if target == "stderr":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif target == "syslog":
        handler = logging.handlers.SysLogHandler("/dev/log")
        fmt = "radosfs[%(process)d]: %(levelname)s %(name)s: %(message)s"
    else:
        # Reopens the file when logrotate has moved it away; SIGHUP reopens it too.
        handler = logging.handlers.WatchedFileHandler(target)
    handler.setFormatter(OneLineFormatter(fmt))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, (level or "info").upper()))


def reopen_logs() -> None:
    """SIGHUP: reopen log files (logrotate's `postrotate kill -HUP`)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.acquire()
            try:
                if h.stream:
                    h.stream.close()
                h.stream = h._open()
                if isinstance(h, logging.handlers.WatchedFileHandler):
                    h._statstream()
            finally:
                h.release()
    log.info("SIGHUP: log reopened")


async def serve(fs_options: MountOptions, handle, mountpoint: str, source: str,
                ready) -> int:
    """Mount, report readiness, serve until unmounted or signalled, then write back.

    Returns how many librados calls were abandoned and are still running."""
    # The collaborators are built here and injected (S3QL's mount.py is the model).
    conn = Connection(handle, Bridge(op_timeout=fs_options.op_timeout, grace=TIMEOUT_GRACE))
    fs = MountContext(conn, fs_options, PageCache(fs_options.cache_size))
    fs.kinds = kinds = NodeKinds(fs)
    ops = Operations(fs, kinds.root())
    try:
        pyfuse3.init(ops, mountpoint, fuse_options(fs_options, source))
    except RuntimeError as exc:
        raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
    clean = False
    try:
        async with trio.open_nursery() as nursery:
            fs.cache.nursery = fs.nursery = nursery
            nursery.start_soon(_signals, nursery)
            nursery.start_soon(fs.cache.expire_dirty)
            nursery.start_soon(_set_readahead, mountpoint, fs_options.readahead_kb)
            log.info("mounted %s on %s", source, mountpoint)
            ready(None)
            await pyfuse3.main()
            await _write_back_at_exit(fs, fs_options.op_timeout + TIMEOUT_GRACE)
            clean = True
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        log.info("unmounted %s%s", mountpoint, "" if clean else " (after an error)")
    return conn.bridge.stuck


async def _write_back_at_exit(fs: MountContext, bound: float) -> None:
    """Write back what is still dirty, then close the images; bounded when the cluster
    does not answer: no write-back acknowledged for `bound` seconds ends the write-back
    (what is left is logged as lost, file by file), and closing the images gets `bound`
    seconds in all. A cluster that answers, however slowly, is waited for."""
    started = time.monotonic()
    dirty = sum(1 for f in fs.cache.files.values() if f.dirty)
    if dirty:
        log.info("writing back %d file(s) before exit", dirty)
    failed = await fs.cache.flush_all(stall=bound)
    for key, err in failed:
        f = fs.cache.get(key)
        log.error("exit: %d bytes of %s could not be written back (%s); they are lost",
                  f.dirty_bytes if f is not None else 0, _describe(fs, key),
                  os.strerror(err))
    # Before Rados.shutdown(): closing an rbd.Image after it hangs forever.
    with trio.move_on_after(bound) as scope:
        await fs.images.close_all()
    if scope.cancelled_caught:
        log.error("exit: images still not closed after %.0fs; exiting without", bound)
    if dirty or failed:
        log.info("write-back at exit took %.1fs", time.monotonic() - started)


def _describe(fs: MountContext, key) -> str:
    """A cache key as the path a user knows: pool/object, pool/image."""
    if key.kind == IMAGE:
        backend = fs.images._backends.get(key)
        name = backend.name if backend is not None else f"(image id {key.name})"
    else:
        name = key.name
    return f"{key.pool}/{name}" + (f" at snapshot {key.view}" if key.view else "")


async def _set_readahead(mountpoint: str, kb: int) -> None:
    """Raise the kernel's read-ahead for this mount (128 KiB by default), so sequential
    reads arrive as requests of up to 1 MiB instead of 128 KiB. Needs root; best effort.

    The stat runs in a thread: it is answered by this very daemon's loop.
    """
    try:
        dev = (await trio.to_thread.run_sync(os.stat, mountpoint)).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(kb))
        log.debug("read_ahead_kb=%d for %s", kb, mountpoint)
    except OSError as exc:
        log.info("could not set read-ahead of %s (%s); reads arrive in 128 KiB pieces",
                 mountpoint, exc)


async def _signals(nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
        async for sig in sigs:
            if sig == signal.SIGHUP:   # logrotate's idiom, not a reason to unmount
                reopen_logs()
                continue
            log.info("signal %d: unmounting after writing back", sig)
            pyfuse3.terminate()
            return


def tame_malloc() -> None:
    """Give freed I/O buffers back to the system.

    librados and our cache allocate and free MiB-sized buffers on many threads. glibc's
    default raises its mmap threshold after such frees and keeps the memory in per-thread
    arenas, so the daemon's RSS grew to several times the cache budget. A fixed threshold
    (which also turns the dynamic one off) and few arenas keep RSS near the budget.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    libc.mallopt(M_MMAP_THRESHOLD, 256 << 10)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 20)
    libc.mallopt(M_ARENA_MAX, 2)


def run_daemon(mo: MountOptions, mountpoint: str, source: str, ready) -> int:
    """Connect, mount and serve; `ready(err)` is called once with None or a message."""
    faulthandler.register(signal.SIGUSR1)
    tame_malloc()
    warning = keyring_warning(mo.keyring)
    if warning:
        log.warning("%s", warning)
    try:
        handle = open_cluster(client_config(mo))
    except (ConnectError, MountError) as exc:
        ready(str(exc))
        return 1
    code = 0
    stuck = 0
    try:
        stuck = trio.run(serve, mo, handle, mountpoint, source, ready)
    except MountError as exc:
        ready(str(exc))
        code = 1
    except Exception as exc:  # a bug: log it fully, tell the caller one line
        log.exception("radosfs stopped on an unexpected error")
        ready(f"unexpected error: {exc!r}")
        code = 1
    if not _shutdown(handle, SHUTDOWN_TIMEOUT) or stuck:
        # Worker threads still inside librados (calls abandoned at their deadline) or a
        # shutdown that did not return: the interpreter's exit could wait for them, or
        # finalize an rbd.Image whose close then hangs. Leave at once.
        log.info("exiting with %d call(s) still stuck in librados", stuck)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _shutdown(handle, timeout: float) -> bool:
    """Rados.shutdown() in a thread, waited for at most `timeout` seconds."""
    t = threading.Thread(target=handle.shutdown, name="rados shutdown", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        log.error("librados shutdown did not return within %.0fs", timeout)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any("remount" in chunk.split(",") for chunk in args.options):
        return remount(args)
    try:
        mo = resolve_options(args)
        mountpoint = check_mountpoint(args.mountpoint)
    except (MountError, OptionError) as exc:
        print(f"mount.radosfs: {exc}", file=sys.stderr)
        return 1
    warning = keyring_warning(mo.keyring)
    if warning and not args.foreground:
        print(f"mount.radosfs: warning: {warning}", file=sys.stderr)
    mo.log = target = log_target(mo, args.foreground)
    if args.foreground:
        setup_logging(target, mo.log_level, mo.debug)
        name_process(mountpoint)

        def ready(err: str | None) -> None:
            if err:
                print(f"mount.radosfs: {err}", file=sys.stderr)
            else:
                sd_notify(f"READY=1\nSTATUS=serving {mountpoint}\nMAINPID={os.getpid()}")
        return run_daemon(mo, mountpoint, args.source, ready)
    return _daemonize(mo, mountpoint, args)


def name_process(mountpoint: str) -> None:
    """`radosfs` as the process name (ps -o comm, top, pgrep radosfs). The command line
    keeps `python -m radosfs.mount SOURCE MOUNTPOINT ...`: Python cannot rewrite it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(15, b"radosfs", 0, 0, 0)   # PR_SET_NAME: 15 bytes of comm
    except (OSError, AttributeError):
        pass


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify, NotifyAccess=all for the forked daemon) we are ready."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    import socket
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", path, exc)


def remount(args: argparse.Namespace) -> int:
    """`mount -o remount,ro|rw MOUNTPOINT`: the kernel's read-only flag, changed in place.

    A mount made with `-o ro` refuses changes in the daemon too, so it cannot be made
    writable by a remount: that is one clear error. Other options cannot change on a
    live mount (they are ignored here, as for any FUSE filesystem)."""
    def fail(msg: str) -> int:
        print(f"mount.radosfs: remount: {msg}", file=sys.stderr)
        return 1
    mountpoint = os.path.abspath(args.mountpoint)
    # mount(8) hands over the mount's current options too (user_id=, group_id=, conf=...):
    # only ro/rw and the kernel flags can change; the last ro/rw wins.
    ro = None
    flags: dict[str, str] = {}
    for o in (o for chunk in args.options for o in chunk.split(",")):
        if o in ("ro", "rw"):
            ro = o == "ro"
        elif o in KERNEL_FLAGS:
            flags[o[2:] if o.startswith("no") else o] = o
    if ro is None:
        return fail("say ro or rw (only the read-only flag can change on a live mount)")
    if not _is_radosfs_mount(mountpoint):
        return fail(f"{mountpoint} is not a radosfs mount")
    try:
        daemon_ro = json.loads(open(os.path.join(mountpoint, ".radosfs-stats")).read())[
            "mount"]["ro"]
    except (OSError, ValueError, KeyError) as exc:
        return fail(f"cannot ask the daemon of {mountpoint}: {exc}")
    if not ro and daemon_ro:
        return fail(f"{mountpoint} was mounted with -o ro: unmount it and mount it again "
                    f"without ro to make it writable")
    # -i: mount(8) makes the remount itself instead of calling this helper again.
    res = subprocess.run(["mount", "-i", "-o", ",".join(["remount", "ro" if ro else "rw",
                                                          *sorted(flags.values())]),
                          mountpoint],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return fail(res.stderr.strip().splitlines()[-1] if res.stderr.strip()
                    else f"mount exited with {res.returncode}")
    return 0


def _is_radosfs_mount(mountpoint: str) -> bool:
    try:
        lines = open("/proc/self/mountinfo").read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        mp = fields[4].encode().decode("unicode_escape")
        if mp == mountpoint and fields[sep + 1].startswith("fuse.radosfs"):
            return True
    return False


def _daemonize(mo: MountOptions, mountpoint: str, args: argparse.Namespace) -> int:
    """Fork before any thread exists; the parent returns once the child says ready."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        return _wait_ready(rfd, pid, mountpoint)
    os.close(rfd)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    keep_stderr = mo.log == "stderr"   # the journal, or asked for (a container's log)
    try:
        setup_logging(mo.log, mo.log_level, mo.debug)
    except OSError as exc:
        os.write(wfd, f"cannot open log {mo.log}: {exc.strerror}".encode())
        os._exit(1)
    name_process(mountpoint)
    sent = False

    def ready(err: str | None) -> None:
        nonlocal sent
        if sent:
            if err:
                log.error("%s", err)
            return
        sent = True
        os.write(wfd, (err or "OK").encode()[:4000])
        os.close(wfd)
        if not err:  # from now on nothing may write to the caller's terminal
            os.dup2(null, 1)
            if not keep_stderr:
                os.dup2(null, 2)
            sd_notify(f"READY=1\nSTATUS=serving {mountpoint}\nMAINPID={os.getpid()}")

    code = run_daemon(mo, mountpoint, args.source, ready)
    os._exit(code)


def _wait_ready(rfd: int, pid: int, mountpoint: str) -> int:
    import select
    ready, _, _ = select.select([rfd], [], [], READY_TIMEOUT)
    msg = os.read(rfd, 4096).decode(errors="replace") if ready else ""
    os.close(rfd)
    if msg == "OK":
        return 0
    if not ready:
        os.kill(pid, signal.SIGTERM)
        msg = f"the mount was not ready within {READY_TIMEOUT:g}s"
    os.waitpid(pid, 0) if ready else None
    print(f"mount.radosfs: {msg or 'the mount daemon exited early'}", file=sys.stderr)
    return 1


def entry() -> None:
    """The `mount.radosfs` console script."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
