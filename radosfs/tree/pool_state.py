"""What the tree knows of an object pool beyond single names: which directories it has
(from a full listing, trusted briefly), and which snapshot a read-only view shows (and
the `ceph.snap.btime` it shows for it)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import trio

INDEX_MIN_TTL = 1.0        # seconds a pool's directory index is trusted (= attr_timeout)
BTIME_XATTR = "ceph.snap.btime"


def btime(ts: datetime) -> bytes:
    """`ceph.snap.btime` as CephFS gives it: "secs.nsecs" (Samba's snapshot module)."""
    secs = ts.timestamp()
    whole = int(secs)
    return f"{whole}.{int(round((secs - whole) * 1e9)):09d}".encode()


class PoolIndex:
    """Which directories an object pool has, from a full listing (trusted briefly)."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()
        self.markers: set[str] = set()   # directory marker objects known to exist
        #: marker -> the whole second this mount last stamped it with (see
        #: PoolDir._changed: stamping it again within that second changes nothing)
        self.stamped: dict[str, int] = {}
        self.has_snaps = False           # the pool has pool snapshots (see may_list_ghosts)
        self.snaps_checked = -1e9
        self.stamp = 0.0
        self.ttl = INDEX_MIN_TTL
        self.lock = trio.Lock()

    def fresh(self) -> bool:
        return time.monotonic() - self.stamp < self.ttl

    def add_path(self, name: str) -> None:
        self.dirs.update(parent_dirs(name))


def parent_dirs(name: str) -> list[str]:
    """The directories an object name implies: 'a/b/c' -> ['a/', 'a/b/']."""
    parts = name.split("/")
    return ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]


@dataclass(frozen=True)
class PoolView:
    """A RADOS pool snapshot as the tree shows it: `.snap/NAME/` of an object pool."""
    name: str
    snap_id: int
    stamp: datetime

    @property
    def ident(self) -> str:
        """Its identity inside the mount: a name reused after rmdir is another view."""
        return f"{self.name}@{self.snap_id}"
