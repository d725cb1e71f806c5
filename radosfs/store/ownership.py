"""Mode, owner and group of object files, kept in the RADOS xattr `radosfs.attrs`.

Mount options (`uid=`, `gid=`, `umask=`) give every file its default mode and owner.
`chmod`, `chown` and a `create` with a mode other than the default store an override on
the object (piece 0 of a striped set) as `mode=0600 uid=1000 gid=1000`, so `rsync -a`,
`cp -p` and `tar x` keep permissions. The xattr is not shown among `user.*` xattrs.
Listings fetch it in batches (one thread call per slice of names), not one by one.
"""
from __future__ import annotations

import errno
import itertools
import time
from dataclasses import dataclass, field

import rados
import trio

from ..client.bridge import Bridge, concurrently
from ..errors import RadosFSError
from .rados_ops import stat_object

ATTRS_XATTR = "radosfs.attrs"
BATCH_THREADS = 8
# A zero-length object at the top of a pool saying "some objects here carry radosfs.attrs".
# Without it, stat and listings skip the xattr reads (one round trip per object) entirely.
FLAG_OBJECT = ".radosfs-attrs"
FLAG_TTL = 1.0


@dataclass(frozen=True)
class Ownership:
    mode: int | None = None   # permission bits (0o7777), None = from mount options
    uid: int | None = None
    gid: int | None = None

    def encode(self) -> bytes:
        parts = []
        if self.mode is not None:
            parts.append(f"mode={self.mode:04o}")
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        if self.gid is not None:
            parts.append(f"gid={self.gid}")
        return " ".join(parts).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Ownership:
        if not raw:
            return NO_OVERRIDE
        fields: dict[str, int] = {}
        for part in raw.decode(errors="replace").split():
            key, _, value = part.partition("=")
            try:
                fields[key] = int(value, 8) & 0o7777 if key == "mode" else int(value)
            except ValueError:
                continue
        return cls(fields.get("mode"), fields.get("uid"), fields.get("gid"))

    def merged(self, mode: int | None = None, uid: int | None = None,
               gid: int | None = None) -> Ownership:
        return Ownership(mode if mode is not None else self.mode,
                         uid if uid is not None else self.uid,
                         gid if gid is not None else self.gid)


NO_OVERRIDE = Ownership()


def owner_xattrs(owner: Ownership) -> dict[str, bytes]:
    """The xattrs a new object carries for `owner` (none without an override)."""
    return {ATTRS_XATTR: owner.encode()} if owner != NO_OVERRIDE else {}


def read_ownership(io: rados.Ioctx, oid: str) -> Ownership:
    """Blocking: the override stored on one object (none if absent)."""
    try:
        return Ownership.decode(io.get_xattr(oid, ATTRS_XATTR))
    except rados.Error:
        return NO_OVERRIDE


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


async def pool_has_overrides(bridge: Bridge, io: rados.Ioctx, flag: PoolFlag) -> bool:
    if flag.present or time.monotonic() - flag.checked < FLAG_TTL:
        return flag.present
    async with flag.lock:
        if not flag.present and time.monotonic() - flag.checked >= FLAG_TTL:
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
