"""What the tree knows of an object pool beyond single names: which directories it has
(from a full listing, trusted briefly), and which snapshot a read-only view shows (and
the `ceph.snap.btime` it shows for it)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import trio

INDEX_MIN_TTL = 1.0        # seconds a pool's directory index is trusted (= attr_timeout)
NAMES_DIRS = 16            # directories whose names a pool's index keeps (see PoolIndex.names)
NAMES_MAX = 10_000         # ... each with at most this many (a bigger one is not kept)
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
        #: prefix -> (the names directly in it, when the listing they come from started):
        #: for a few directories where names are being looked up and not found (a burst
        #: of creates, `cp -r` into a new directory), so that a lookup of a name that is
        #: not there needs no round trip while that listing is fresh (`absent`)
        self.names: dict[str, tuple[set[str], float]] = {}
        self._track: dict[str, None] = {}    # the directories to keep names of, oldest first
        #: (prefix, name) -> when this mount made it: a listing that started before may
        #: have missed it, so `learn` keeps it
        self._made: dict[tuple[str, str], float] = {}
        self.listed_at = -1e9   # monotonic time the last whole listing of the pool started

    def fresh(self) -> bool:
        return time.monotonic() - self.stamp < self.ttl

    def add_path(self, name: str) -> None:
        """An object this mount just made: its directories, and its name in the names
        kept of the directory it is in (and of theirs)."""
        self.dirs.update(parent_dirs(name))
        if self._track:
            now = time.monotonic()
            parts = name.split("/")
            for i, part in enumerate(parts):
                prefix = "/".join(parts[:i]) + "/" if i else ""
                if part and prefix in self._track:
                    if len(self._made) >= NAMES_MAX:  # no listing for a long while: forget
                        self.names.clear()
                        self._made.clear()
                    self._made[(prefix, part)] = now
                    known = self.names.get(prefix)
                    if known is not None:
                        known[0].add(part)

    def track(self, prefix: str, empty_since: float | None = None) -> None:
        """Keep the names of directory `prefix` from the next listing on (`empty_since`: it
        is known to hold nothing as of that monotonic time -- a directory just made)."""
        self._track.pop(prefix, None)
        self._track[prefix] = None
        while len(self._track) > NAMES_DIRS:
            old = next(iter(self._track))
            del self._track[old]
            self.names.pop(old, None)
        if empty_since is not None:
            self.names[prefix] = (set(), empty_since)

    def learn(self, listing: list[str], started: float) -> None:
        """The names of the tracked directories from a whole pool listing that started at
        monotonic time `started`."""
        self.listed_at = max(self.listed_at, started)
        if not self._track:
            return
        found: dict[str, set[str]] = {p: set() for p in self._track}
        reach = {""}   # the tracked directories and the directories above them
        for p in found:
            reach.update(parent_dirs(p + "x"))
        for name in listing:
            prefix = ""
            for part in name.split("/"):
                into = found.get(prefix)
                if into is not None and part:
                    into.add(part)
                prefix += part + "/"
                if prefix not in reach:
                    break
        self._made = {k: t for k, t in self._made.items() if t >= started}
        for (prefix, part) in self._made:
            if prefix in found:
                found[prefix].add(part)
        for prefix, names in found.items():
            if len(names) > NAMES_MAX:
                self.names.pop(prefix, None)
            else:
                self.names[prefix] = (names, started)

    def absent(self, prefix: str, name: str, window: float) -> bool:
        """Whether a listing younger than `window` seconds (negative_timeout) says `name` is not
        in directory `prefix`, and this mount has made no object of that name since."""
        known = self.names.get(prefix)
        return (known is not None and time.monotonic() - known[1] < window
                and name not in known[0])


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
