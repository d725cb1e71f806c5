"""The daemon as a process of the system: its name in ps, readiness for systemd
(sd_notify), malloc settings that keep its RSS near the cache budget, and which radosfs
mounts the system has (no Ceph binding needed: the `radosfs` command uses it too)."""
from __future__ import annotations

import ctypes
import logging
import os
import socket

log = logging.getLogger("radosfs")




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
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", path, exc)


def radosfs_mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, source, kernel options) of every radosfs mount, from mountinfo."""
    out = []
    try:
        lines = open("/proc/self/mountinfo").read().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1].startswith("fuse.radosfs"):
            unescape = (lambda t: t.encode().decode("unicode_escape"))
            out.append((unescape(fields[4]), unescape(fields[sep + 2]), fields[5]))
    return out
