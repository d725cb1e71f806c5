"""Object pools as directory trees.

An object pool has no directories of its own: `/` in object names shows as
subdirectories. An empty directory made with `mkdir` is kept as a zero-length marker object
whose name ends in `/` (the convention S3 tools use); markers never show as files. Which
directories exist is learnt from the pool listing (`PoolIndex`, trusted briefly).

A directory's own metadata (mode, owner, exact times) is the record on its marker object
(store/ownership.py; the pool directory's is on the flag object `.radosfs-attrs`). Creating,
removing or renaming an entry through the mount moves a directory's mtime and ctime by
stamping its marker's RADOS mtime (when it has a marker). Symlinks are objects too.
"""
from __future__ import annotations

import errno
import logging
import time

import rados
import trio

from ..client.bridge import concurrently
from ..errors import RadosFSError
from ..store.rados_ops import (create_object, operate_aio, stamp_mtime, stat_many_and_read,
                                stat_object)
from ..store.keys import StoreKey
from ..store.ownership import (FLAG_OBJECT, NO_OVERRIDE, Ownership, check_time, mark_pool,
                               now_ns, owner_xattrs, read_ownership, stamp_for,
                               store_record)
from ..store.striper import StripedData, piece_name, read_head
from .base import FRESH_SECONDS, DirNode, FileNode, Node
from .context import MountContext
from .inodes import POOL, NodeKey
from .names import (NOT_UTF8, NSDIR, SNAPDIR, check_component, check_object_name,
                    path_problem)
from .pool_listing import PoolListing
from .pool_state import BTIME_XATTR, PoolView, btime
from .pool_xattrs import PoolXattrs

log = logging.getLogger(__name__)

SYMLINK_MAX = 4096         # PATH_MAX: the longest symlink target
LOOKUP_READ = 64 << 10     # what a lookup reads along with its stats (a small file whole)
LOOKUP_READ_SKIP = 2       # ... unless this many lookups in a row here found nothing
POOL_META_WAIT = 0.5       # seconds a pool directory's getattr waits for its record


class PoolDir(PoolXattrs, PoolListing):
    """A directory of an object pool: the pool itself (prefix '') or a '/'-prefix in it,
    at HEAD or, read-only, at a pool snapshot (`view`: then prefix '' is `.snap/NAME/`)."""

    def __init__(self, fs: MountContext, pool: str, prefix: str,
                 view: PoolView | None = None) -> None:
        self.pool = pool
        self.namespace = fs.namespace   # every ioctx and listing of fs is in it
        self.prefix = prefix
        self.view = view
        self.snap = view.ident if view is not None else None
        super().__init__(fs, self.dir_key(prefix))
        self.read_only = view is not None
        if view is not None and not prefix:
            self.virtual_xattrs = {BTIME_XATTR: btime(view.stamp)}
        #: the directory's record and its marker's RADOS mtime (None: no marker), as last
        #: read, and when (see `remember_dir`)
        self.record: Ownership = NO_OVERRIDE
        self.stored: float | None = None
        self._fresh_at = -1e9
        self._denied_logged = False
        #: lookups here in a row that found nothing (a burst of creates): past
        #: LOOKUP_READ_SKIP, lookups stop reading the first bytes along (see `lookup`)
        self._misses = 0
        #: the last lookup here found a plain file: the next one asks for that first (see
        #: `lookup`)
        self._last_plain = False

    async def ioctx(self) -> rados.Ioctx:
        if self.view is not None:
            return await self.fs.conn.snap_ioctx(self.pool, self.snap, self.view.snap_id)
        return await self.fs.conn.ioctx(self.pool)

    # ---- the directory's own metadata -------------------------------------------------

    @property
    def is_pool_root(self) -> bool:
        """The pool directory itself (its quota xattrs: tree/pool_xattrs.py) -- not a
        directory below it, a snapshot of it, or `.ns/NS/` (a quota is the whole pool's)."""
        return (not self.prefix and self.view is None
                and self.namespace == self.fs.options.namespace)

    @property
    def marker_oid(self) -> str:
        """The object carrying the directory's record: its marker (the pool's flag)."""
        return self.prefix or FLAG_OBJECT

    @property
    def owner(self) -> Ownership:
        return self.record

    def remember_dir(self, stored: float | None, record: Ownership) -> None:
        """What a lookup just read of the marker (None: there is none)."""
        self.stored, self.record, self._fresh_at = stored, record, time.monotonic()
        if stored is not None and self.prefix and self.view is None:
            self.fs.pool_index(self.pool).markers.add(self.prefix)

    async def _read_dir(self) -> None:
        io = await self.ioctx()
        bridge = self.fs.bridge
        got: dict[str, object] = {"stored": None, "record": NO_OVERRIDE}

        async def stat() -> None:
            try:
                got["stored"] = (await stat_object(bridge, io, self.marker_oid))[1]
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

        async def record() -> None:
            got["record"] = await bridge.run(read_ownership, io, self.marker_oid)

        if await self.fs.has_overrides(self.pool):
            async with concurrently() as n:
                n.start_soon(stat)
                n.start_soon(record)
        elif self.prefix:
            await stat()
        self.remember_dir(got["stored"], got["record"])  # type: ignore[arg-type]

    async def attributes(self):
        if time.monotonic() - self._fresh_at >= FRESH_SECONDS:
            if self.prefix:
                await self._read_dir()
            else:
                # Looked up in the mount root, whose lookups the kernel serializes: a pool
                # that does not answer must not stall every other pool's lookup.
                with trio.move_on_after(POOL_META_WAIT) as scope:
                    try:
                        await self._read_dir()
                    except RadosFSError as exc:
                        if exc.errno not in (errno.EACCES, errno.EPERM):
                            raise
                        # A pool this user may not read is still a pool: the root lists
                        # it with the mount's defaults; its own listing says EACCES/EPERM.
                        if not self._denied_logged:
                            self._denied_logged = True
                            log.warning("pool %s: its directory's record cannot be read "
                                        "(%s); shown with the mount's defaults", self.pool,
                                        errno.errorcode[exc.errno])
                        self.remember_dir(None, NO_OVERRIDE)
                if scope.cancelled_caught:
                    log.warning("pool %s: its directory's record did not arrive within "
                                "%.0f s; showing what was last read", self.pool,
                                POOL_META_WAIT)
        self._fresh_at = -1e9
        if self.view is not None and not self.prefix:
            # `.snap/NAME/`: the pool directory's mode and owner as they were at the
            # snapshot (its record, read there), and the snapshot's time.
            a = self.dir_attrs(self.record.owner_only, None)
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = int(
                self.view.stamp.timestamp() * 1e9)
            return a
        stored = self.stored
        if not self.prefix and not self.record.valid_times(stored):
            stored = None  # the flag object's own mtime is not the pool directory's
        return self.dir_attrs(self.record, stored)

    async def _store_dir(self, make) -> None:
        """Store a new record on the marker (made if missing): `make(stored)` gives (the
        record, the RADOS mtime to leave)."""
        self.check_writable()
        io = await self.ioctx()
        await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        await self._read_dir()
        record, stamp = make(self.stored)
        self.fs.pool_index(self.pool).stamped.pop(self.prefix, None)
        await self.fs.bridge.run(store_record, io, self.marker_oid, record, stamp)
        self.remember_dir(float(stamp), record)
        if self.prefix:
            self.fs.pool_index(self.pool).add_path(self.prefix)

    async def set_ownership(self, owner: Ownership) -> None:
        """chmod/chown of the directory: stored on its marker; mtime stays, ctime = now."""
        def make(stored: float | None) -> tuple[Ownership, int]:
            stamp = int(stored) if stored is not None else int(time.time())
            return owner.with_times(stored, stamp, ctime=now_ns()), stamp
        await self._store_dir(make)

    async def touch(self, mtime: int | None, atime: int | None = None) -> None:
        """utimens of the directory: the exact times in its record (see ObjectFile)."""
        for t in (mtime, atime):
            if t is not None:
                check_time(t)

        def make(stored: float | None) -> tuple[Ownership, int]:
            stamp = stamp_for(mtime) if mtime is not None else (
                int(stored) if stored is not None else int(time.time()))
            return self.record.with_times(stored, stamp, atime, mtime, now_ns()), stamp
        await self._store_dir(make)

    async def _changed(self, keep: bool = False) -> None:
        """An entry was created, removed or renamed here: mtime and ctime become now, by
        stamping the marker's RADOS mtime (the record's times then no longer hold; its mode
        and owner stay). The pool directory's times do not move (its record lives on the
        pool's flag object, which every create would then have to write).

        `keep`: a file was removed, so a directory that existed only through its objects'
        names gets its marker now (`rm dir/*; rmdir dir` and `rm -r` rely on it staying)."""
        self._fresh_at = -1e9
        if keep and not self.prefix and self.namespace != self.fs.options.namespace:
            # `.ns/NS/` lives while NS holds an object: like a directory's marker, its
            # flag object keeps it after its last file goes (`rm .ns/NS/*; rmdir .ns/NS`).
            await mark_pool(self.fs.bridge, await self.ioctx(), self.fs.pool_flag(self.pool))
        idx = self.fs.pool_index(self.pool)
        if not self.prefix or not (keep or self.prefix in idx.markers):
            return
        now = int(time.time())
        if idx.stamped.get(self.prefix) == now and self.prefix in idx.markers:
            # This mount stamped the marker with this very second already (a burst of
            # creates): a second stamp would store the same mtime. One write per
            # directory per second instead of one per entry.
            return
        io = await self.ioctx()
        await operate_aio(self.fs.bridge, io, self.prefix, stamp_mtime, now)
        idx.stamped[self.prefix] = now
        idx.markers.add(self.prefix)
        idx.add_path(self.prefix)

    async def _dir_changed(self, node: Node) -> None:
        if isinstance(node, PoolDir):
            await node._changed()

    def child_key(self, name: str) -> str:
        return self.prefix + name

    def file_node(self, oid: str) -> FileNode:
        return self.kinds.object_file(self.pool, oid, self.view)

    def dir_key(self, prefix: str) -> NodeKey:
        return NodeKey(POOL, self.pool, self.snap, prefix, self.namespace)

    def dir_node(self, prefix: str) -> DirNode:
        return self.kinds.pool_dir(self.pool, prefix, self.view)

    async def lookup(self, name: str) -> Node:
        check_component(name)
        if name == SNAPDIR and not self.prefix and self.snap is None:
            return self.kinds.snap_root(self.pool, images=False)
        if name == NSDIR and not self.prefix and self.snap is None and not self.namespace:
            return self.kinds.namespaces(self.pool)
        if name in (FLAG_OBJECT, NSDIR) and not self.prefix:
            raise RadosFSError(errno.ENOENT, f"{name} is reserved by radosfs")
        oid = self.child_key(name)
        check_object_name(oid + "/")
        if self.snap is None and self.fs.options.negative_timeout > 0 and \
                self.fs.pool_index(self.pool).absent(self.prefix, name,
                                                     self.fs.options.negative_timeout):
            # Not in a listing of this directory younger than negative_timeout, and not
            # made by this mount since (docs/semantics.md): no round trip.
            raise RadosFSError(errno.ENOENT, f"{self.pool}/{oid}")
        io = await self.ioctx()
        bridge = self.fs.bridge
        results: dict[str, tuple[int, float] | None] = {}
        owner = [NO_OVERRIDE, NO_OVERRIDE]   # the object's record, the marker's

        content: list[bytes | None] = [None]

        async def owner_probe(which: tuple[int, ...]) -> None:
            if await self.fs.has_overrides(self.pool):
                async def one(i: int) -> None:
                    owner[i] = await bridge.run(read_ownership, io, (oid, oid + "/")[i])
                async with concurrently() as n2:
                    for i in which:
                        n2.start_soon(one, i)

        async def ask(names: tuple[str, ...], which: tuple[int, ...], read: bool) -> None:
            # The stats and the first bytes (for a small file, all of it, so the open and
            # read that usually follow need no round trip of their own; not in a burst of
            # lookups that find nothing: creates, whose lookups it would only cost an
            # operation each) in one batch: one wake-up, no task per call. The owner
            # records, where the pool has any (or may have: the flag's answer is a second
            # old), in parallel: still one round trip.
            async def batch() -> None:
                found, data = await stat_many_and_read(bridge, io, names,
                                                       LOOKUP_READ if read else 0)
                results.update(found)
                if data is not None:
                    content[0] = data
            if self.fs.overrides_known(self.pool) is False:
                await batch()
                return
            async with concurrently() as n:
                n.start_soon(batch)
                n.start_soon(owner_probe, which)

        head = piece_name(oid, 0)
        # Which of the three a name can be (a plain object, a directory marker `name/`, a
        # striped file's head) is asked in one round trip, all at once -- except right
        # after a lookup here found a plain file (`cat *`, a backup reading a directory):
        # then the plain object is asked alone first, and the other two only if it is not
        # there (a second round trip, for a guess that was wrong). Two RADOS operations
        # per lookup instead of four, where almost every name is a plain file.
        plain_first = self._last_plain
        read_along = self.snap is None and self._misses < LOOKUP_READ_SKIP
        if plain_first:
            await ask((oid,), (0,), read_along)
            if results[oid] is None:
                await ask((oid + "/", head), (1,), False)
        else:
            await ask((oid, oid + "/", head), (0, 1), read_along)
        self._misses = 0 if any(r is not None for r in results.values()) else self._misses + 1
        self._last_plain = results[oid] is not None
        if results[oid] is not None:
            node = self.file_node(oid)
            node.remember(*results[oid], owner=owner[0], fresh=True, content=content[0])
            return node
        if results[head] is not None:
            layout = await read_head(bridge, io, oid)
            if layout is not None:
                node = self.file_node(oid)
                node.remember(layout[1], results[head][1],
                              await bridge.run(read_ownership, io, head)
                              if await self.fs.has_overrides(self.pool) else NO_OVERRIDE,
                              fresh=True, striped=StripedData(bridge, io, oid, *layout))
                return node
        cached = self.fs.cache.get(StoreKey.object(self.pool, oid, self.snap,
                                                   self.namespace))
        if cached is not None and cached.dirty:
            return self.file_node(oid)
        if results[oid + "/"] is not None:
            node = self.dir_node(oid + "/")
            node.remember_dir(results[oid + "/"][1], owner[1])  # type: ignore[attr-defined]
            return node
        if self.snap is None and self.fs.options.negative_timeout > 0:
            # Names looked up and not found here: creates are coming; keep the names of
            # this directory from the next listing on, to answer the next such lookups.
            self.fs.pool_index(self.pool).track(self.prefix)
        idx = await self.index()
        if oid + "/" in idx.dirs:
            node = self.dir_node(oid + "/")
            node.remember_dir(None, NO_OVERRIDE)  # type: ignore[attr-defined]
            return node
        raise RadosFSError(errno.ENOENT, f"{self.pool}/{oid}")

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """A marker object `name/`, carrying the record if `owner` asks for a mode or owner
        other than the mount's defaults (mkdir -m 700, mktemp -d, tar, rsync)."""
        self._not_reserved(name)
        node = await self._absent(name)
        marker = node + "/"
        io = await self.ioctx()
        owner = owner.owner_only
        if owner != NO_OVERRIDE:
            await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        idx = self.fs.pool_index(self.pool)
        # Nothing was under it as of the listing that said the name was free.
        empty_since = idx.listed_at
        mtime = await create_object(self.fs.bridge, io, marker, owner_xattrs(owner))
        idx.add_path(marker)
        idx.markers.add(marker)
        if self.snap is None and not idx.has_snaps and self.fs.options.negative_timeout > 0:
            idx.track(marker, empty_since=empty_since)
        await self._changed()
        child = self.dir_node(marker)
        child.remember_dir(float(mtime), owner)  # type: ignore[attr-defined]
        return child

    async def symlink(self, name: str, target: bytes, owner: Ownership = NO_OVERRIDE
                      ) -> Node:
        """An object holding the target as its data, marked by `radosfs.symlink`."""
        check_component(name)
        self._not_reserved(name)
        if not target:
            raise RadosFSError(errno.ENOENT, "a symlink needs a target")
        if len(target) >= SYMLINK_MAX:
            raise RadosFSError(errno.ENAMETOOLONG, "symlink target too long")
        oid = await self._absent(name)
        check_object_name(oid)
        io = await self.ioctx()
        await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        record = Ownership(None, owner.uid, owner.gid, symlink=True)
        mtime = await create_object(self.fs.bridge, io, oid, owner_xattrs(record), target)
        node = self.file_node(oid)
        node.remember(len(target), float(mtime), owner=record, fresh=True)
        self.fs.pool_index(self.pool).add_path(oid)
        await self._changed()
        return node

    def _not_reserved(self, name: str) -> None:
        if not self.prefix and name in (SNAPDIR, NSDIR, FLAG_OBJECT):
            raise RadosFSError(errno.EPERM, f"{name} is reserved by radosfs")

    async def _absent(self, name: str) -> str:
        """The object name for a new child; EEXIST if a file or directory has the name."""
        try:
            await self.lookup(name)
        except RadosFSError as exc:
            if exc.errno == errno.ENOENT:
                return self.child_key(name)
            raise
        raise RadosFSError(errno.EEXIST, f"{self.pool}/{self.child_key(name)} exists")

    async def rmdir(self, name: str) -> None:
        check_component(name)
        prefix = self.child_key(name) + "/"
        io = await self.ioctx()
        try:
            node = await self.lookup(name)
        except RadosFSError as exc:
            # A directory kept only by objects that were all just removed (rm -r): it is
            # gone from the index, but the caller saw it, so removing it succeeds.
            if exc.errno != errno.ENOENT or self.dir_key(prefix) not in self.fs.table.by_key:
                raise
            node = self.dir_node(prefix)
        if not node.is_dir:
            raise RadosFSError(errno.ENOTDIR, f"{self.pool}/{prefix} is a file")

        # Raw names: one that cannot be shown still keeps its directory from being removed.
        raw_prefix = prefix.encode()
        raw = [n for n in await self.fs.conn.list_names(self.pool)
               if n.startswith(raw_prefix) and n != raw_prefix]
        names = [n.decode() for n in raw if path_problem(n) != NOT_UTF8]
        unshowable = len(raw) - len(names)  # python-rados cannot stat them: kept as there
        if names and await self.may_list_ghosts():
            names = list(await self.existing(io, names))
        if unshowable:
            names.extend(["(unshowable)"] * unshowable)
        if names:
            raise RadosFSError(errno.ENOTEMPTY, f"{self.pool}/{prefix} is not empty")
        try:
            await self.fs.bridge.aio(lambda cb: io.aio_remove(prefix, cb))
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:  # a directory kept only by its (gone) contents
                raise
        self.fs.pool_index(self.pool).dirs.discard(prefix)
        self.fs.pool_index(self.pool).markers.discard(prefix)
        await self._changed(keep=True)
        self.fs.table.drop(self.dir_key(prefix))

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        check_component(name)
        self._not_reserved(name)
        oid = self.child_key(name)
        check_object_name(oid)
        io = await self.ioctx()
        if owner != NO_OVERRIDE:
            await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        node = self.file_node(oid)
        try:
            mtime = await create_object(self.fs.bridge, io, oid, owner_xattrs(owner))
        except RadosFSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            node.created = None  # raced with another creator: open what is there
        else:
            # The new object's version, so the open that follows need not ask again.
            node.created = (0, (float(mtime), 0, False))
            node.remember(0, float(mtime), owner=owner)
        self.fs.pool_index(self.pool).add_path(oid)
        await self._changed()
        return node

    async def unlink(self, name: str) -> None:
        check_component(name)
        oid = self.child_key(name)
        node = await self.lookup(name)
        if not isinstance(node, FileNode):
            raise RadosFSError(errno.EISDIR, f"{self.pool}/{oid} is a directory")
        await node.remove()
        self.fs.table.drop(node.key)
        await self._changed(keep=True)

    async def rename(self, old: str, new_parent: DirNode, new: str, flags: int) -> None:
        """A file moves within its pool (copy, then remove: see ObjectFile.rename_to); the
        moved inode is the file at the new name from then on."""
        node = await self.lookup(old)
        if not (isinstance(new_parent, PoolDir) and new_parent.pool == self.pool
                and new_parent.view == self.view and new_parent.namespace == self.namespace
                ) or not isinstance(node, FileNode):
            await super().rename(old, new_parent, new, flags)
            return
        target = await new_parent.rename_target(new, flags)
        new_oid = new_parent.child_key(new)
        dst = target if isinstance(target, FileNode) else new_parent.file_node(new_oid)
        await node.rename_to(dst)
        self.fs.pool_index(self.pool).add_path(new_oid)
        self.fs.table.drop(dst.key)
        self.fs.table.rekey(node, dst.key)
        await self._changed(keep=True)
        if new_parent is not self:
            await self._dir_changed(new_parent)
