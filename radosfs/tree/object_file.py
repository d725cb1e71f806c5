"""A RADOS object (or a striped set of them) as a regular file or a symlink: attributes,
xattrs, the metadata record (mode, owner, exact times), removal and rename (copy, then
remove). A symlink is an object whose data is its target, marked by `radosfs.symlink`."""
from __future__ import annotations

import errno
import logging
import time

import rados

from ..client.bridge import concurrently
from ..errors import RadosFSError, errno_of, printable
from ..store.copy import copy_metadata
from ..store.keys import StoreKey
from ..store.object_backend import ObjectBackend
from ..store.ownership import (RADOSFS_XATTRS, Ownership, check_time, mark_pool, now_ns,
                               read_ownership, stamp_for, store_record)
from ..store.rados_ops import MAX_IO, operate, read_object, stamp_mtime, stat_object
from ..store.striper import INTERNAL_XATTRS, StripedData
from .base import FRESH_SECONDS, LOOKUP_OPEN_WINDOW, FileNode
from .context import MountContext
from .inodes import OBJECT, NodeKey
from .pool_state import PoolView

log = logging.getLogger(__name__)


class ObjectFile(FileNode):
    """A file of an object pool: one RADOS object, or a striped set past the threshold."""

    def __init__(self, fs: MountContext, pool: str, oid: str,
                 view: PoolView | None = None) -> None:
        self.snap = view.ident if view is not None else None
        super().__init__(fs, NodeKey(OBJECT, pool, self.snap, oid, fs.namespace))
        self.pool = pool
        self.oid = oid
        self.view = view
        self.read_only = view is not None
        self._backend: ObjectBackend | None = None
        self._striped: StripedData | None = None
        self._fresh: tuple[int, float, float] | None = None
        #: what the last lookup read, for the open right after it: (size, mtime, the whole
        #: object when it was small, monotonic time of the answer, the backend's `changes`
        #: then)
        self._looked: tuple[int, float, bytes | None, float, int] | None = None

    @property
    def stored_key(self) -> StoreKey:
        return StoreKey.object(self.pool, self.oid, self.snap, self.fs.namespace)

    def remember(self, size: int, mtime: float, owner: Ownership | None = None,
                 fresh: bool = False, striped: StripedData | None = None,
                 content: bytes | None = None) -> None:
        """What a lookup or listing just read (`striped`: its layout, None = a plain
        object); `fresh` (a lookup) lets the getattr that follows within the same request
        use it instead of asking the cluster again, and an open within LOOKUP_OPEN_WINDOW
        too -- with `content`, the whole object the lookup read along, for its first
        read."""
        super().remember(size, mtime, owner)
        now = time.monotonic()
        self._fresh = (size, mtime, now) if fresh else None
        self._looked = (size, mtime, content if content is not None and len(content) == size
                        else None, now, self._backend.changes if self._backend else 0
                        ) if fresh and striped is None else None
        if self._orphan is not None:
            return
        if self._backend is None:
            self._striped = striped
            return
        # Close-to-open whatever the layout: another client may have made the file
        # striped or plain since we looked. A file in use here keeps what it has (the
        # backend follows its own conversions, and relocates on ENOENT).
        f = self.fs.cache.get(self.backend_key)
        if f is None or not f.in_use:
            self._backend.adopt(striped)

    @property
    def striped(self) -> bool:
        return (self._backend.striped if self._backend else self._striped) is not None

    async def ioctx(self) -> rados.Ioctx:
        if self.view is not None:
            return await self.fs.conn.snap_ioctx(self.pool, self.snap, self.view.snap_id)
        return await self.fs.conn.ioctx(self.pool)

    async def stored_backend(self) -> ObjectBackend:
        if self._backend is None:
            self._backend = ObjectBackend(self.fs.bridge, await self.ioctx(), self.pool,
                                          self.oid, self.snap, self._striped,
                                          self.fs.conn.omap_headers)
        return self._backend

    async def open(self, writable: bool, truncate: bool):
        looked, self._looked = self._looked, None
        if self._orphan is None:
            # Every open asks the cluster for the version (close-to-open), unless we have
            # just created the object ourselves, or the lookup of its name answered just
            # now (the kernel looks a name up right before opening it: the window is in
            # docs/semantics.md).
            backend = await self.stored_backend()
            created = self.created
            if created is None and looked is not None and backend.striped is None \
                    and looked[4] == backend.changes \
                    and time.monotonic() - looked[3] < LOOKUP_OPEN_WINDOW:
                size, mtime, content, _, _ = looked
                # The token a stat would give (ObjectBackend.version).
                self.created = created = (size, (mtime, size, False))
                backend.revalidate((size, mtime))
                if content is not None and not truncate:
                    backend.offer_content(content)
            else:
                backend.revalidate(
                    (created[0], created[1][0]) if created is not None else None)
        return await super().open(writable, truncate)

    async def stat_stored(self) -> tuple[int, float]:
        fresh, self._fresh = self._fresh, None
        if fresh is not None and time.monotonic() - fresh[2] < FRESH_SECONDS:
            return fresh[0], fresh[1]
        backend = await self.stored_backend()
        async with concurrently() as nursery:
            nursery.start_soon(self._fetch_owner, backend)
            size, mtime = await self._stat(backend)
        return size, mtime

    async def _fetch_owner(self, backend: ObjectBackend) -> None:
        if await self.fs.has_overrides(self.pool):
            self.owner = await self.fs.bridge.run(read_ownership, backend.ioctx,
                                                  backend.head_oid)

    async def _stat(self, backend: ObjectBackend) -> tuple[int, float]:
        # (A layout changed by another client is followed by the backend itself.)
        size, mtime = await backend.stat()
        self.mtime = mtime
        return size, mtime

    async def _head(self) -> tuple[rados.Ioctx, str]:
        if self._orphan is not None:
            raise RadosFSError(errno.ENOENT, f"{self.describe()} was removed (still open)")
        backend = await self.backend()
        return backend.ioctx, backend.head_oid

    async def get_xattr(self, key: str) -> bytes:
        if key in RADOSFS_XATTRS or self.striped and key in INTERNAL_XATTRS:
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        io, oid = await self._head()
        try:
            return await self.fs.bridge.run(io.get_xattr, oid, key)
        except rados.Error as exc:
            if errno_of(exc) in (errno.ENODATA, errno.ENOENT):
                raise RadosFSError(errno.ENODATA, f"no xattr {key}") from None
            raise

    async def list_xattrs(self) -> list[str]:
        io, oid = await self._head()
        names = (await _object_xattrs(self.fs, io, oid)).keys()
        hidden = INTERNAL_XATTRS if self.striped else ()
        return sorted(n for n in names if n not in hidden and n not in RADOSFS_XATTRS)

    async def _meta_op(self, build) -> None:
        """Change xattrs without touching the mtime (RADOS would stamp "now"; in POSIX
        only ctime changes): chmod after utimens, as rsync does, keeps the time."""
        io, oid = await self._head()
        (await self.stored_backend()).forget_version()
        _, mtime = await stat_object(self.fs.bridge, io, oid)
        await self.fs.bridge.run(operate, io, oid, build, mtime)

    async def set_xattr(self, key: str, value: bytes) -> None:
        if key in RADOSFS_XATTRS or self.striped and key in INTERNAL_XATTRS:
            raise RadosFSError(errno.EPERM, f"{key} is kept by radosfs itself")
        await self._meta_op(lambda op: op.set_xattr(key, value))

    async def remove_xattr(self, key: str) -> None:
        if key not in await self.list_xattrs():
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        await self._meta_op(lambda op: op.rm_xattr(key))

    async def _store(self, make) -> None:
        """Store a new record: `make(stored_mtime)` gives (record, RADOS mtime to keep)."""
        io, oid = await self._head()
        (await self.stored_backend()).forget_version()
        await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        _, stored = await stat_object(self.fs.bridge, io, oid)
        record, stamp = make(stored)
        await self.fs.bridge.run(store_record, io, oid, record, stamp)
        self.owner, self.mtime = record, float(stamp)

    async def set_ownership(self, owner: Ownership) -> None:
        """chmod/chown: store the override on the object (see ownership.py); the mtime
        stays, ctime is now."""
        if self._orphan is not None:
            self.owner = owner
            return
        await self._store(lambda stored: (
            owner.with_times(stored, int(stored), ctime=now_ns()), int(stored)))

    async def set_times(self, mtime: int | None, atime: int | None) -> None:
        """utimens: the exact times go into the record, the RADOS mtime becomes the
        nearest whole second RADOS can hold (see ownership.stamp_for)."""
        for t in (mtime, atime):
            if t is not None:
                check_time(t)
        if self._orphan is not None:  # futimens on an unlinked file: nothing stored
            self.owner = self.owner.with_times(self.mtime, int(self.mtime or 0), atime,
                                               mtime, now_ns())
            return

        def make(stored: float) -> tuple[Ownership, int]:
            stamp = stamp_for(mtime) if mtime is not None else int(stored)
            return self.owner.with_times(stored, stamp, atime, mtime, now_ns()), stamp
        await self._store(make)

    async def accessed(self) -> None:
        """relatime: the atime becomes now when it is not after mtime and ctime, or a
        day old; strictatime: at every open for reading; noatime: never. Stored in the
        record (a write to RADOS); ctime does not move."""
        choice = self.fs.options.atime
        if choice == "noatime" or self.read_only or self.fs.options.ro or self.orphaned:
            return
        now = now_ns()
        a, m, c = self.owner.shown(self.mtime, self.fs.mount_time)
        if choice == "relatime" and a > max(m, c) and now - a < 86400 * 10 ** 9:
            return
        await self._store(lambda stored: (
            self.owner.with_times(stored, int(stored), atime=now), int(stored)))

    async def readlink(self) -> bytes:
        if not self.owner.symlink:
            raise RadosFSError(errno.EINVAL, f"{self.describe()} is not a symlink")
        io, oid = await self._head()
        return await read_object(self.fs.bridge, io, oid, 0, 1 << 16)

    async def remove(self) -> None:
        """unlink, or the file a rename replaces: the stored object (or set) goes.

        Descriptors still open on it keep the file until their last close, detached from
        RADOS (`PageCache.detach`): they read what it held, their writes stay in memory,
        and nothing they do reaches the removed object or a new file of the same name.
        """
        backend = await self.backend()
        await self.keep_while_open()
        await backend.remove()

    async def rename_to(self, target: FileNode) -> None:
        """RADOS has no rename: copy data, xattrs, omap and mtime to the target's name,
        then remove us; from then on this node is the file at the target's name.

        The cached file moves with it (`PageCache.move`): descriptors open on it read and
        write the file at its new name, and its dirty data is written there. Write-back is
        held while the stored bytes are copied, so none lands in the old object after.
        Not atomic: a crash in between leaves both names (never neither).
        """
        if not isinstance(target, ObjectFile):
            await super().rename_to(target)
            return
        if self._orphan is not None:
            raise RadosFSError(errno.ENOENT, f"{self.describe()} was removed")
        self._looked = None
        cache = self.fs.cache
        src = await self.backend()
        f = cache.get(self.backend_key)
        if f is not None:
            await cache.freeze(f)
        try:
            dst = await self._copy_to(src, target)
            if f is not None:
                cache.move(f, dst)
                f.version = await dst.version()
            self.oid = target.oid
            self._backend, self._striped = dst, dst.striped
        finally:
            if f is not None:
                cache.thaw(f)
        await src.remove()

    async def _copy_to(self, src: ObjectBackend, target: ObjectFile) -> ObjectBackend:
        """A new stored file at the target's name holding what `src` stores (the target's
        old file removed first); returns its backend."""
        size, mtime = await src.stat()
        try:
            await target.remove()
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        bridge, io = self.fs.bridge, src.ioctx
        if src.striped is not None:
            striped = await StripedData.create(bridge, io, target.oid, src.striped.layout)
            dst = ObjectBackend(bridge, io, self.pool, target.oid, self.snap, striped,
                                self.fs.conn.omap_headers)
        else:
            dst = ObjectBackend(bridge, io, self.pool, target.oid, self.snap,
                                headers=self.fs.conn.omap_headers)
            await bridge.run(operate, io, target.oid, lambda op: op.new(
                rados.LIBRADOS_CREATE_EXCLUSIVE))
        dst.plan_writeback(size, 0)  # the size it will have: no detour through plain
        try:
            pos = 0
            while pos < size:
                chunk = await src.read(pos, min(size - pos, MAX_IO))
                if not chunk:
                    break
                await dst.write(pos, chunk)
                pos += len(chunk)
            if pos < size:
                await dst.truncate(size)
            hidden = INTERNAL_XATTRS if src.striped is not None else ()
            await copy_metadata(bridge, io, src.head_oid, dst.head_oid,
                                self.fs.conn.omap_headers, skip_xattrs=hidden)
            # Last: the data and metadata writes above stamped "now".
            await bridge.run(operate, io, dst.head_oid, stamp_mtime, mtime)
        except Exception:
            # A refused copy (EXDEV for an omap key, EOPNOTSUPP from an EC pool, EIO) leaves
            # no half-made target beside the source.
            try:
                await dst.remove()
            except Exception as exc:  # the copy's error is the one the caller needs
                log.warning("rename to %s failed; removing the partial copy failed too: %s",
                            printable(target.oid), exc)
            raise
        self.mtime = float(int(mtime))
        return dst


async def _object_xattrs(fs: MountContext, io: rados.Ioctx, oid: str) -> dict[str, bytes]:
    return await fs.bridge.run(lambda: dict(io.get_xattrs(oid)))
