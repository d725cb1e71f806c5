"""Object pools as directory trees.

An object pool has no directories of its own: `/` in object names shows as
subdirectories. An empty directory made with `mkdir` is kept as a zero-length marker object
whose name ends in `/` (the convention S3 tools use); markers never show as files. Which
directories exist is learnt from the pool listing (`PoolIndex`, trusted briefly).
"""
from __future__ import annotations

import errno
import itertools
import logging
import time
from typing import TYPE_CHECKING, Hashable

import rados
import trio

from .bridge import concurrently
from .errors import RadosFSError, errno_of
from .objects import stat_object, struct_to_epoch
from .ownership import (ATTRS_XATTR, FLAG_OBJECT, NO_OVERRIDE, Ownership, mark_pool,
                        read_many, read_ownership)
from .striped import StripedData, piece_name, read_head, split_piece

if TYPE_CHECKING:
    from .filesystem import FileSystem

from .nodes import (INDEX_MIN_TTL, LIST_CHUNK, SNAPDIR, DirNode, Node,
                    check_component, check_object_name, valid_path_name)
from .objectfile import ObjectFile

log = logging.getLogger(__name__)


class PoolIndex:
    """Which directories an object pool has, from a full listing (trusted briefly)."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()
        self.markers: set[str] = set()   # directory marker objects known to exist
        self.has_snaps = False           # the pool has pool snapshots (see may_list_ghosts)
        self.snaps_checked = -1e9
        self.stamp = 0.0
        self.ttl = INDEX_MIN_TTL
        self.lock = trio.Lock()

    def fresh(self) -> bool:
        return time.monotonic() - self.stamp < self.ttl

    def add_path(self, name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            self.dirs.add("/".join(parts[:i]) + "/")


class PoolDir(DirNode):
    """A directory of an object pool: the pool itself (prefix '') or a '/'-prefix in it."""

    def __init__(self, fs: FileSystem, pool: str, prefix: str, snap: str | None = None,
                 snap_ioctx: rados.Ioctx | None = None) -> None:
        self.pool = pool
        self.prefix = prefix
        self.snap = snap
        super().__init__(fs, self.dir_key(prefix))
        self.read_only = snap is not None
        self._snap_ioctx = snap_ioctx

    async def ioctx(self) -> rados.Ioctx:
        return self._snap_ioctx or await self.fs.conn.ioctx(self.pool)

    def child_key(self, name: str) -> str:
        return self.prefix + name

    def file_node(self, oid: str) -> ObjectFile:
        return self.fs.table.get(("obj", self.pool, self.snap, oid),
                                 lambda: ObjectFile(self.fs, self.pool, oid, self.snap,
                                                    self._snap_ioctx))

    def dir_key(self, prefix: str) -> Hashable:
        return ("pool", self.pool, prefix) if self.snap is None \
            else ("snapdir", self.pool, self.snap, prefix)

    def dir_node(self, prefix: str) -> PoolDir:
        return self.fs.table.get(self.dir_key(prefix),
                                 lambda: PoolDir(self.fs, self.pool, prefix, self.snap,
                                                 self._snap_ioctx))

    async def index(self) -> PoolIndex:
        idx = self.fs.pool_index(self.pool, self.snap)
        async with idx.lock:
            if not idx.fresh():
                io = await self.ioctx()
                started = time.monotonic()

                def scan() -> list[str]:
                    return [o.key for o in io.list_objects() if "/" in o.key]

                names = await self.fs.bridge.run(scan)
                if await self.may_list_ghosts():
                    names = list(await self.existing(io, names))
                dirs: set[str] = set()
                for name in names:
                    parts = name.split("/")
                    for i in range(1, len(parts)):
                        dirs.add("/".join(parts[:i]) + "/")
                idx.dirs = dirs
                took = time.monotonic() - started
                idx.stamp = time.monotonic()
                idx.ttl = max(INDEX_MIN_TTL, 20 * took)
        return idx

    async def lookup(self, name: str) -> Node:
        check_component(name)
        if name == SNAPDIR and not self.prefix and self.snap is None:
            from .snapshots import PoolSnapRoot
            return self.fs.table.get(("snaproot", self.pool),
                                     lambda: PoolSnapRoot(self.fs, self.pool))
        if name == FLAG_OBJECT and not self.prefix:
            raise RadosFSError(errno.ENOENT, f"{name} is reserved by radosfs")
        oid = self.child_key(name)
        check_object_name(oid + "/")
        io = await self.ioctx()
        bridge = self.fs.bridge
        results: dict[str, tuple[int, float] | None] = {}
        owner = [NO_OVERRIDE]

        async def owner_probe() -> None:
            # In parallel with the stats: one round trip for a lookup, not two.
            if await self.fs.has_overrides(self.pool, io):
                owner[0] = await bridge.run(read_ownership, io, oid)

        async def probe(o: str) -> None:
            try:
                results[o] = await stat_object(bridge, io, o)
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                results[o] = None

        head = piece_name(oid, 0)
        async with concurrently() as n:
            for o in (oid, oid + "/", head):
                n.start_soon(probe, o)
            n.start_soon(owner_probe)
        if results[oid] is not None:
            node = self.file_node(oid)
            node.remember(*results[oid], owner=owner[0], fresh=True)
            return node
        if results[head] is not None:
            layout = await read_head(bridge, io, oid)
            if layout is not None:
                node = self.file_node(oid)
                node.remember(layout[1], results[head][1],
                              StripedData(bridge, io, oid, *layout),
                              await bridge.run(read_ownership, io, head)
                              if await self.fs.has_overrides(self.pool, io) else NO_OVERRIDE,
                              fresh=True)
                return node
        cached = self.fs.cache.get(("obj", self.pool, self.snap, oid))
        if cached is not None and cached.dirty:
            return self.file_node(oid)
        if results[oid + "/"] is not None:
            return self.dir_node(oid + "/")
        idx = await self.index()
        if oid + "/" in idx.dirs:
            return self.dir_node(oid + "/")
        raise RadosFSError(errno.ENOENT, f"{self.pool}/{oid}")

    async def entries(self):
        io = await self.ioctx()
        bridge = self.fs.bridge
        it = await bridge.run(io.list_objects)
        seen_dirs: set[str] = set()
        idx = self.fs.pool_index(self.pool, self.snap)
        all_dirs: set[str] = set()
        plen = len(self.prefix)
        ghosts = await self.may_list_ghosts()
        members: dict[str, list[str]] = {}  # with ghosts: unconfirmed dir -> names in it
        while True:
            chunk = await bridge.run(lambda: [o.key for o in itertools.islice(it, LIST_CHUNK)])
            if not chunk:
                break
            files: list[str] = []
            heads: list[str] = []
            dirs: list[str] = []
            for oid in chunk:
                parts = oid.split("/")
                for i in range(1, len(parts)):
                    all_dirs.add("/".join(parts[:i]) + "/")
                if not oid.startswith(self.prefix) or len(oid) == plen:
                    continue
                if not valid_path_name(oid):
                    log.debug("object %r in pool %s cannot be shown as a path", oid,
                              self.pool)
                    continue
                rest = oid[plen:]
                if not plen and rest in (SNAPDIR, FLAG_OBJECT):
                    continue  # hidden: the snapshot directory, the ownership flag
                first, slash, _ = rest.partition("/")
                if slash:
                    if first in seen_dirs:
                        continue
                    if ghosts:  # shown once one object under it really exists
                        members.setdefault(first, []).append(oid)
                        continue
                    seen_dirs.add(first)
                    dirs.append(first)
                    continue
                piece = split_piece(rest)
                if piece is None:
                    files.append(rest)
                elif piece[1] == 0:
                    heads.append(rest)
                # other pieces of a striped set are never shown on their own
            if members:
                found = await self.existing(io, [o for names in members.values()
                                                 for o in names])
                for first in [f for f, names in members.items() if found & set(names)]:
                    seen_dirs.add(first)
                    dirs.append(first)
                    del members[first]
                for names in members.values():
                    names.clear()
            batch = []
            for first in dirs:
                node = self.dir_node(self.prefix + first + "/")
                batch.append((first, node, await node.attributes()))
            batch.extend(await self._stat_files(io, files, heads))
            if batch:
                yield batch
        if not ghosts:
            idx.dirs = all_dirs
            idx.stamp = time.monotonic()

    async def may_list_ghosts(self) -> bool:
        """Whether the pool listing may name objects that do not exist here.

        A listing is always of HEAD (librados ignores the read snapshot), and once a pool
        has pool snapshots, HEAD keeps the names of objects deleted after one (their
        clones survive; they stat as ENOENT). Then every name must be checked by stat.
        """
        if self.snap is not None:
            return True
        idx = self.fs.pool_index(self.pool)
        if time.monotonic() - idx.snaps_checked > INDEX_MIN_TTL:
            io = await self.ioctx()
            idx.has_snaps = bool(await self.fs.bridge.run(lambda: list(io.list_snaps())))
            idx.snaps_checked = time.monotonic()
        return idx.has_snaps

    async def existing(self, io: rados.Ioctx, oids: list[str]) -> set[str]:
        """Those of `oids` that exist (at this view's snapshot), stat'ed in one batch."""
        results = await self.fs.bridge.aio_many([(lambda cb, o=o: io.aio_stat(o, cb))
                                                 for o in oids])
        found = set()
        for oid, res in zip(oids, results):
            if isinstance(res, BaseException):
                if errno_of(res) != errno.ENOENT:
                    raise res
            elif res[0] is not None:
                found.add(oid)
        return found

    async def _stat_files(self, io: rados.Ioctx, names: list[str], heads: list[str]):
        """Stat a batch of objects concurrently (not one by one): `ls -l` of a big pool.

        `heads` are names like `x.0000000000000000`: shown as the striped file `x` when
        they carry a striper layout, else as themselves.
        """
        out: list = [None] * (len(names) + len(heads))
        bridge = self.fs.bridge
        owners: dict[str, Ownership] = {}

        async def fetch_owners() -> None:
            if not await self.fs.has_overrides(self.pool, io):
                return
            oids = [self.prefix + n for n in names] + [self.prefix + h for h in heads]
            owners.update(await read_many(bridge, io, oids))

        async def plain_all() -> None:
            oids = [self.prefix + name for name in names]
            stats = await bridge.aio_many([
                (lambda cb, o=o: io.aio_stat(o, cb)) for o in oids])
            await owners_done.wait()
            for i, (name, oid, res) in enumerate(zip(names, oids, stats)):
                if isinstance(res, BaseException):
                    if errno_of(res) == errno.ENOENT:
                        continue  # deleted after a snapshot, or just now: not listed
                    raise res
                if res[0] is None:
                    continue
                size, mtime = res[0], struct_to_epoch(res[1])
                node = self.file_node(oid)
                node.remember(size, mtime, owner=owners.get(oid, NO_OVERRIDE))
                out[i] = (name, node, await node.attributes_from(size, mtime))

        async def plain(i: int, name: str) -> None:
            node = self.file_node(self.prefix + name)
            try:
                size, mtime = await stat_object(bridge, io, node.oid)
            except RadosFSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # deleted after a snapshot, or just now: not listed
                raise
            await owners_done.wait()
            node.remember(size, mtime, owner=owners.get(node.oid, NO_OVERRIDE))
            out[i] = (name, node, await node.attributes_from(size, mtime))

        async def striped(i: int, head_name: str) -> None:
            base = split_piece(head_name)[0]  # type: ignore[index]
            oid = self.prefix + base
            layout = await read_head(bridge, io, oid)
            if layout is None:
                await plain(i, head_name)
                return
            try:
                _, mtime = await stat_object(bridge, io, piece_name(oid, 0))
            except RadosFSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            node = self.file_node(oid)
            await owners_done.wait()
            node.remember(layout[1], mtime, StripedData(bridge, io, oid, *layout),
                          owners.get(self.prefix + head_name, NO_OVERRIDE))
            out[i] = (base, node, await node.attributes_from(layout[1], mtime))

        owners_done = trio.Event()

        async def owners_task() -> None:
            try:
                await fetch_owners()
            finally:
                owners_done.set()

        async with concurrently() as n:
            n.start_soon(owners_task)
            n.start_soon(plain_all)
            for i, name in enumerate(heads, len(names)):
                n.start_soon(striped, i, name)
        return [x for x in out if x is not None]

    async def mkdir(self, name: str) -> Node:
        self._not_reserved(name)
        node = await self._absent(name)
        marker = node + "/"
        io = await self.ioctx()
        await create_object(self.fs, io, marker)
        self.fs.pool_index(self.pool).add_path(marker)
        self.fs.pool_index(self.pool).markers.add(marker)
        return self.dir_node(marker)

    def _not_reserved(self, name: str) -> None:
        if not self.prefix and name in (SNAPDIR, FLAG_OBJECT):
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

        def children() -> list[str]:
            return [o.key for o in io.list_objects()
                    if o.key.startswith(prefix) and o.key != prefix]

        names = await self.fs.bridge.run(children)
        if names and await self.may_list_ghosts():
            names = list(await self.existing(io, names))
        if names:
            raise RadosFSError(errno.ENOTEMPTY, f"{self.pool}/{prefix} is not empty")
        try:
            await self.fs.bridge.aio(lambda cb: io.aio_remove(prefix, cb))
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:  # a directory kept only by its (gone) contents
                raise
        self.fs.pool_index(self.pool).dirs.discard(prefix)
        self.fs.pool_index(self.pool).markers.discard(prefix)
        await self._keep_directory()
        self.fs.table.drop(("pool", self.pool, prefix))

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        check_component(name)
        self._not_reserved(name)
        oid = self.child_key(name)
        check_object_name(oid)
        io = await self.ioctx()
        if owner != NO_OVERRIDE:
            await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        node = self.file_node(oid)
        try:
            mtime = await create_object(self.fs, io, oid, owner)
        except RadosFSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            node.created = None  # raced with another creator: open what is there
        else:
            # The new object's version, so the open that follows need not ask again.
            node.created = (0, (float(mtime), 0, False))
            node.remember(0, float(mtime), owner=owner)
        self.fs.pool_index(self.pool).add_path(oid)
        return node

    async def unlink(self, name: str) -> None:
        check_component(name)
        oid = self.child_key(name)
        node = await self.lookup(name)
        if node.is_dir:
            raise RadosFSError(errno.EISDIR, f"{self.pool}/{oid} is a directory")
        await node.remove()  # type: ignore[attr-defined]
        self.fs.table.drop(node.key)
        await self._keep_directory()

    async def _keep_directory(self) -> None:
        """Removing a file must not make its directory vanish (`rm dir/*; rmdir dir` and
        `rm -r` rely on that): a directory that existed only through its objects' names
        gets a marker object the first time a file in it is removed."""
        idx = self.fs.pool_index(self.pool)
        if not self.prefix or self.prefix in idx.markers:
            return
        io = await self.ioctx()
        try:
            await create_object(self.fs, io, self.prefix)
        except RadosFSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        idx.markers.add(self.prefix)
        idx.add_path(self.prefix)


async def create_object(fs: FileSystem, io: rados.Ioctx, oid: str,
                        owner: Ownership = NO_OVERRIDE) -> int:
    """Exclusive create (EEXIST if it exists), asynchronously; returns the mtime stored.

    The mtime is always given: operate_write_op would store 1970 without one.
    """
    mtime = int(time.time())
    op = io.create_write_op()
    try:
        op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
        if owner != NO_OVERRIDE:
            op.set_xattr(ATTRS_XATTR, owner.encode())
        await fs.bridge.aio(lambda cb: io.operate_aio_write_op(op, oid, cb, mtime=mtime))
    finally:
        io.release_write_op(op)
    return mtime
