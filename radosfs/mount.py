"""`mount.radosfs`: option parsing, daemonizing once the mount is ready, signals, logging.

    mount.radosfs [SOURCE] MOUNTPOINT [-o OPT[,OPT...]] [-f]

It is called by mount(8) as `mount.radosfs none /mnt/ceph -o ...`, so `mount -t radosfs`
and /etc/fstab lines work. Without -f it returns once the mount is ready and keeps serving
in the background; every failure before that is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import faulthandler
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time

import pyfuse3
import trio

from .cache import PageCache
from .errors import EscapingFilter
from .client.bridge import Bridge
from .client.connection import ClientConfig, ConnectError, Connection, open_cluster
from .operations import Operations
from .store.keys import IMAGE
from .options import HELP, MountOptions, OptionError, parse_options
from .tree.context import MountContext
from .tree.kinds import NodeKinds

log = logging.getLogger("radosfs")

READY_TIMEOUT = 30.0   # the parent waits this long for the daemon to report
# The bridge's deadline is op_timeout plus this: librados' own timeouts (set to op_timeout)
# normally answer first, so the bridge abandons only calls librados does not bound.
TIMEOUT_GRACE = 1.0
SHUTDOWN_TIMEOUT = 10.0  # Rados.shutdown() may wait for a cluster that is gone


class MountError(Exception):
    """A one-line reason the mount could not be made."""


def build_parser() -> argparse.ArgumentParser:
    epilog = "options (-o):\n" + "\n".join(f"  {k:<26} {v}" for k, v in HELP.items())
    p = argparse.ArgumentParser(
        prog="mount.radosfs", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount a Ceph cluster: pools as directories, RADOS objects and RBD "
                    "images as files.", epilog=epilog)
    p.add_argument("source", nargs="?", default="none",
                   help="'none', or a client name (e.g. admin or client.backup)")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="comma-separated mount options (below)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr")
    p.add_argument("--log", metavar="PATH",
                   help="log file when in the background (default: syslog if available)")
    # Flags mount(8) passes to helpers: accepted and ignored.
    p.add_argument("-n", "-s", "-v", dest="ignored", action="count", help=argparse.SUPPRESS)
    return p


def resolve_options(args: argparse.Namespace) -> MountOptions:
    mo = MountOptions()
    if args.source not in ("none", "radosfs", "ceph", ""):
        mo.name = args.source if "." in args.source else f"client.{args.source}"
    mo = parse_options(args.options, mo)
    if mo.conf is None:
        mo.conf = os.environ.get("CEPH_CONF") or "/etc/ceph/ceph.conf"
    if not os.path.isfile(mo.conf):
        raise MountError(f"ceph configuration {mo.conf} not found (use -o conf=PATH)")
    if mo.keyring is not None and not os.path.isfile(mo.keyring):
        raise MountError(f"keyring {mo.keyring} not found")
    # The daemon changes to / before librados reads them.
    mo.conf = os.path.abspath(mo.conf)
    if mo.keyring is not None:
        mo.keyring = os.path.abspath(mo.keyring)
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
    opts = set(pyfuse3.default_options) - {"default_permissions"}
    opts |= {f"fsname={source if source != 'none' else 'radosfs'}", "subtype=radosfs"}
    opts |= mo.fuse
    if "allow_other" in mo.fuse:
        opts.add("default_permissions")
    if mo.ro:
        opts.add("ro")
    if mo.debug:
        opts.add("debug")
    return opts


def setup_logging(foreground: bool, debug: bool, logfile: str | None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    if foreground or logfile:
        handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                    else logging.StreamHandler(sys.stderr))
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("radosfs[%(process)d]: %(levelname)s "
                                               "%(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    handler.addFilter(EscapingFilter())  # names in messages cannot forge log lines
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


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
        handle = open_cluster(ClientConfig(conf=mo.conf, name=mo.name, keyring=mo.keyring,
                                           connect_timeout=mo.connect_timeout,
                                           op_timeout=mo.op_timeout))
    except ConnectError as exc:
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
    try:
        mo = resolve_options(args)
        mountpoint = check_mountpoint(args.mountpoint)
    except (MountError, OptionError) as exc:
        print(f"mount.radosfs: {exc}", file=sys.stderr)
        return 1
    foreground = args.foreground or mo.debug
    warning = keyring_warning(mo.keyring)
    if warning and not foreground:
        print(f"mount.radosfs: warning: {warning}", file=sys.stderr)
    if foreground:
        setup_logging(True, mo.debug, args.log)

        def ready(err: str | None) -> None:
            if err:
                print(f"mount.radosfs: {err}", file=sys.stderr)
        return run_daemon(mo, mountpoint, args.source, ready)
    return _daemonize(mo, mountpoint, args)


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
    setup_logging(False, mo.debug, args.log)
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
            os.dup2(null, 2)

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


if __name__ == "__main__":
    sys.exit(main())
