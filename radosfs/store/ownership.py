"""The metadata record radosfs keeps beside an object: the RADOS xattr `radosfs.attrs`.

One record serves object files, directories (on their marker object `dir/`; the pool
directory's on the flag object `.radosfs-attrs`), symlinks and RBD images (as the image
metadata key `radosfs.attrs`). It holds what RADOS cannot: mode, owner, group, and the
exact times (nanoseconds, any signed 64-bit second) as text:

    mode=0600 uid=1000 gid=1000 atime=1700000000.123456789 mtime=-86400.000000001
    ctime=1700000001.000000000 stamp=1

Mount options (`uid=`, `gid=`, `umask=`) give everything its default mode and owner; only
what differs is stored. RADOS keeps an object's mtime in whole seconds from 1970 to 2106:
the record's times are valid only while the object's RADOS mtime still equals `stamp`
(the RADOS mtime radosfs stored with them). A write by anyone -- through the mount or
`rados put` -- moves the RADOS mtime, and then mtime and ctime are the RADOS mtime again.

A symlink is an object whose data is the target, marked by the xattr `radosfs.symlink`.
Listings fetch records in batches (one thread call per slice of names), not one by one.
"""
from __future__ import annotations

import errno
import itertools
import time
from dataclasses import dataclass, field, replace

import rados
import trio

from ..client.bridge import Bridge, concurrently
from ..errors import RadosFSError
from .rados_ops import operate, stat_object

ATTRS_XATTR = "radosfs.attrs"
SYMLINK_XATTR = "radosfs.symlink"     # value b"1"; the object's data is the target
RADOSFS_XATTRS = (ATTRS_XATTR, SYMLINK_XATTR)
BATCH_THREADS = 8
# A zero-length object at the top of a pool saying "some objects here carry radosfs.attrs".
# Without it, stat and listings skip the xattr reads (one round trip per object) entirely.
# It also carries the pool directory's own record.
FLAG_OBJECT = ".radosfs-attrs"
FLAG_TTL = 1.0
NS = 10 ** 9
TIME_MIN, TIME_MAX = -(1 << 63) * NS, ((1 << 63) - 1) * NS + NS - 1
# What a RADOS mtime can hold faithfully (uint32 seconds; 0 would mean "now").
STAMP_MIN, STAMP_MAX = 1, (1 << 32) - 1


def check_time(ns: int) -> int:
    """A time radosfs can store exactly (any signed 64-bit second), else EOVERFLOW."""
    if not TIME_MIN <= ns <= TIME_MAX:
        raise RadosFSError(errno.EOVERFLOW, f"time {ns} ns is outside signed 64-bit seconds")
    return ns


def stamp_for(ns: int) -> int:
    """The whole second stored as RADOS mtime for a time: the time itself where RADOS can
    hold it, else the nearest second it can (the record keeps the exact one)."""
    return min(max(ns // NS, STAMP_MIN), STAMP_MAX)


def now_ns() -> int:
    return time.time_ns()


def _enc_time(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(ns), NS)
    return f"{sign}{sec}.{frac:09d}"


def _dec_time(text: str) -> int:
    neg = text.startswith("-")
    sec, _, frac = text.lstrip("-").partition(".")
    ns = int(sec) * NS + int((frac + "000000000")[:9] or 0)
    return -ns if neg else ns


@dataclass(frozen=True)
class Ownership:
    """The record (see above). Times are nanoseconds since the epoch, None = not stored."""
    mode: int | None = None   # permission bits (0o7777), None = from mount options
    uid: int | None = None
    gid: int | None = None
    atime: int | None = None
    mtime: int | None = None
    ctime: int | None = None
    stamp: int | None = None  # the RADOS mtime (seconds) the times were stored with
    symlink: bool = False     # from the marker xattr, not part of the encoded record

    def encode(self) -> bytes:
        parts = []
        if self.mode is not None:
            parts.append(f"mode={self.mode:04o}")
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        if self.gid is not None:
            parts.append(f"gid={self.gid}")
        for key in ("atime", "mtime", "ctime"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={_enc_time(value)}")
        if self.stamp is not None and (self.atime, self.mtime, self.ctime) != (None,) * 3:
            parts.append(f"stamp={self.stamp}")
        return " ".join(parts).encode()

    @classmethod
    def decode(cls, raw: bytes | None, symlink: bool = False) -> Ownership:
        if not raw:
            return SYMLINK if symlink else NO_OVERRIDE
        fields: dict[str, int] = {}
        for part in raw.decode(errors="replace").split():
            key, _, value = part.partition("=")
            try:
                if key == "mode":
                    fields[key] = int(value, 8) & 0o7777
                elif key in ("atime", "mtime", "ctime"):
                    fields[key] = _dec_time(value)
                elif key in ("uid", "gid", "stamp"):
                    fields[key] = int(value)
            except ValueError:
                continue
        return cls(**fields, symlink=symlink)  # type: ignore[arg-type]

    def merged(self, mode: int | None = None, uid: int | None = None,
               gid: int | None = None) -> Ownership:
        return replace(self, mode=mode if mode is not None else self.mode,
                       uid=uid if uid is not None else self.uid,
                       gid=gid if gid is not None else self.gid)

    @property
    def owner_only(self) -> Ownership:
        """Mode and owner only (what a new file's creator asks for)."""
        return Ownership(self.mode, self.uid, self.gid, symlink=self.symlink)

    def valid_times(self, stored: float | None) -> bool:
        """Whether the stored times still hold for an object whose RADOS mtime is
        `stored`: nobody wrote it since."""
        return self.stamp is not None and stored is not None and int(stored) == self.stamp

    def shown(self, stored: float | None, default: float) -> tuple[int, int, int]:
        """(atime, mtime, ctime) in ns for an object whose RADOS mtime is `stored` (None:
        no object, `default` then)."""
        base = int((stored if stored is not None else default) * NS)
        if not self.valid_times(stored):
            return base, base, base
        m = self.mtime if self.mtime is not None else base
        c = self.ctime if self.ctime is not None else base
        return (self.atime if self.atime is not None else m), m, c

    def with_times(self, stored: float | None, stamp: int, atime: int | None = None,
                   mtime: int | None = None, ctime: int | None = None) -> Ownership:
        """This record with new times, to be stored with RADOS mtime `stamp`; times that
        no longer held (the object was written since) are dropped, not carried."""
        if self.valid_times(stored):
            old = (self.atime, self.mtime, self.ctime)
        else:
            old = (None, None, None)
        return replace(self, atime=atime if atime is not None else old[0],
                       mtime=mtime if mtime is not None else old[1],
                       ctime=ctime if ctime is not None else old[2], stamp=stamp)


NO_OVERRIDE = Ownership()
SYMLINK = Ownership(symlink=True)


def owner_xattrs(owner: Ownership) -> dict[str, bytes]:
    """The xattrs a new object carries for `owner` (none without an override)."""
    out = {ATTRS_XATTR: owner.encode()} if owner.encode() else {}
    if owner.symlink:
        out[SYMLINK_XATTR] = b"1"
    return out


def read_ownership(io: rados.Ioctx, oid: str) -> Ownership:
    """Blocking: the record stored on one object, and whether it is a symlink (one read of
    its xattrs); none if absent."""
    try:
        xattrs = dict(io.get_xattrs(oid))
    except rados.Error:
        return NO_OVERRIDE
    return Ownership.decode(xattrs.get(ATTRS_XATTR), SYMLINK_XATTR in xattrs)


def store_record(io: rados.Ioctx, oid: str, record: Ownership, stamp: int,
                 extra=None) -> None:
    """Blocking: write the record (and `extra(op)` steps) in one op that leaves the RADOS
    mtime at `stamp`. Creates the object if it is missing (a directory marker)."""
    def build(op) -> None:
        op.set_xattr(ATTRS_XATTR, record.encode())
        if extra is not None:
            extra(op)
    operate(io, oid, build, stamp)


async def read_many(bridge: Bridge, io: rados.Ioctx, oids: list[str]) -> dict[str, Ownership]:
    """The overrides of many objects, in a few thread calls working through slices."""
    out: dict[str, Ownership] = {}
    if not oids:
        return out
    n = min(BATCH_THREADS, len(oids))

    def work(part: list[str]) -> list[tuple[str, Ownership]]:
        return [(oid, read_ownership(io, oid)) for oid in part]

    async def one(part: list[str]) -> None:
        out.update(await bridge.run(work, part))

    async with concurrently() as nursery:
        for k in range(n):
            nursery.start_soon(one, list(itertools.islice(oids, k, None, n)))
    return out


@dataclass
class PoolFlag:
    """Whether a pool has ownership overrides (cached briefly, set for good once seen)."""
    present: bool = False
    checked: float = -1e9
    lock: trio.Lock = field(default_factory=trio.Lock)


def known_overrides(flag: PoolFlag) -> bool | None:
    """`pool_has_overrides` without a round trip; None when it would need one."""
    if flag.present or time.monotonic() - flag.checked < FLAG_TTL:
        return flag.present
    return None


async def pool_has_overrides(bridge: Bridge, io: rados.Ioctx, flag: PoolFlag) -> bool:
    known = known_overrides(flag)
    if known is not None:
        return known
    async with flag.lock:
        if known_overrides(flag) is None:   # not answered meanwhile by another task
            try:
                await stat_object(bridge, io, FLAG_OBJECT)
                flag.present = True
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            flag.checked = time.monotonic()
    return flag.present


async def mark_pool(bridge: Bridge, io: rados.Ioctx, flag: PoolFlag) -> None:
    """Before the first override is stored in a pool: make the flag object exist."""
    if flag.present:
        return
    def create() -> None:
        try:
            io.write_full(FLAG_OBJECT, b"")
        except rados.ObjectExists:
            pass
    await bridge.run(create)
    flag.present = True
