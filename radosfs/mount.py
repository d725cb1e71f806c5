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
from .client.connection import ConnectError, Connection, open_cluster
from .operations import Operations
from .store.keys import IMAGE
from .options import HELP, KERNEL_FLAGS, MountOptions, OptionError
from .tree.context import MountContext
from .tree.kinds import NodeKinds
from .command.exporter import (listener_port, open_metrics_listener, serve_metrics,
                               write_metrics_file)
from .command.logs import log_target, reopen_logs, setup_logging
from .metrics import render
from .command.process import name_process, radosfs_mounts, sd_notify, tame_malloc
from .command.setup import (MountError, check_mountpoint, client_config, fuse_options,
                            key_file_warnings, resolve_options)

log = logging.getLogger("radosfs")


READY_TIMEOUT = 30.0   # the parent waits this long for the daemon to report
# The bridge's deadline is op_timeout plus this: librados' own timeouts (set to op_timeout)
# normally answer first, so the bridge abandons only calls librados does not bound.
TIMEOUT_GRACE = 1.0
SHUTDOWN_TIMEOUT = 10.0  # Rados.shutdown() may wait for a cluster that is gone


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


async def serve(fs_options: MountOptions, handle, mountpoint: str, source: str,
                ready) -> int:
    """Mount, report readiness, serve until unmounted or signalled, then write back.

    Returns how many librados calls were abandoned and are still running."""
    # The collaborators are built here and injected (S3QL's mount.py is the model).
    conn = Connection(handle, Bridge(op_timeout=fs_options.op_timeout, grace=TIMEOUT_GRACE),
                      namespace=fs_options.namespace)
    fs = MountContext(conn, fs_options, PageCache(fs_options.cache_size))
    fs.kinds = kinds = NodeKinds(fs)
    ops = Operations(fs, kinds.root())
    listener = None
    if fs_options.metrics_port is not None:
        try:
            listener = await open_metrics_listener(fs_options.metrics_port)
        except OSError as exc:
            raise MountError(f"metrics_port={fs_options.metrics_port}: cannot listen on "
                             f"127.0.0.1 ({exc.strerror})") from None
    fs.exported.update(mountpoint=mountpoint, admin_socket=_admin_socket(handle),
                       metrics_port=listener_port(listener) if listener else None,
                       metrics_file=fs_options.metrics_file)

    def metrics() -> str:
        return render(fs.counters(), fs.requests)
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
            if listener is not None:
                nursery.start_soon(serve_metrics, listener, metrics)
            if fs_options.metrics_file:
                nursery.start_soon(write_metrics_file, fs_options.metrics_file, metrics)
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


def _admin_socket(handle) -> str | None:
    """The admin socket librados opened (its path with $cluster, $name, $pid expanded)."""
    try:
        path = handle.conf_get("admin_socket")
    except Exception:  # noqa: BLE001 -- only shown in the stats file
        return None
    return path or None


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


def run_daemon(mo: MountOptions, mountpoint: str, source: str, ready) -> int:
    """Connect, mount and serve; `ready(err)` is called once with None or a message."""
    faulthandler.register(signal.SIGUSR1)
    tame_malloc()
    for warning in key_file_warnings(mo):
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
    if not args.foreground:        # in the foreground the daemon's log line says it
        for warning in key_file_warnings(mo):
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
    if mountpoint not in [mp for mp, _, _ in radosfs_mounts()]:
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
