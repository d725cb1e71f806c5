"""The tree of node kinds: root, pool, directory, object file.

Each node answers for itself (attributes, lookup, listing, open); `operations.Operations`
only dispatches to them. Nodes are kept in an `InodeTable` by a stable key, so a name gets
the same inode number for the life of the mount.

An object pool has no directories of its own: `/` in object names shows as
subdirectories. An empty directory made with `mkdir` is kept as a zero-length marker object
whose name ends in `/` (the convention S3 tools use); markers never show as files.
"""
from __future__ import annotations

import errno
import itertools
import logging
import stat
import time
from typing import TYPE_CHECKING, AsyncIterator, Hashable

import pyfuse3
import rados
import trio

from .bridge import concurrently
from .errors import RadosFSError, errno_of
from .object_backend import ObjectBackend
from .objects import MAX_IO, operate, stat_object, struct_to_epoch
from .ownership import (ATTRS_XATTR, FLAG_OBJECT, NO_OVERRIDE, Ownership, PoolFlag, mark_pool,
                        pool_has_overrides, read_many, read_ownership)
from .striped import INTERNAL_XATTRS, StripedData, piece_name, read_head, split_piece

if TYPE_CHECKING:
    from .filesystem import FileSystem

log = logging.getLogger(__name__)

SNAPDIR = ".snap"
LIST_CHUNK = 1000          # objects pulled from the pool listing per thread hop
MAX_NAME_COMPONENT = 255   # bytes, as every Linux filesystem
MAX_OBJECT_NAME = 2048     # osd_max_object_name_len's default
FRESH_SECONDS = 0.05       # a lookup's stat answers the getattr right after it
INDEX_MIN_TTL = 1.0        # seconds a pool's directory index is trusted (= attr_timeout)


def check_component(name: str) -> None:
    if len(name.encode()) > MAX_NAME_COMPONENT:
        raise RadosFSError(errno.ENAMETOOLONG, f"name component longer than 255 bytes")
    if name in ("", ".", "..") or "/" in name:
        raise RadosFSError(errno.EINVAL, f"bad name {name!r}")


def check_object_name(name: str) -> None:
    if len(name.encode()) > MAX_OBJECT_NAME:
        raise RadosFSError(errno.ENAMETOOLONG, f"object name longer than {MAX_OBJECT_NAME}")


def valid_path_name(name: str) -> bool:
    """Whether an object name can be shown as a path (no empty, '.' or '..' components)."""
    parts = name.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # a directory marker
    return bool(parts) and all(p not in ("", ".", "..") and len(p.encode()) <= 255
                               for p in parts)


class Node:
    """Something with an inode number."""
    is_dir = False
    read_only = False

    def __init__(self, fs: FileSystem, key: Hashable) -> None:
        self.fs = fs
        self.key = key
        self.ino = 0

    async def attributes(self) -> pyfuse3.EntryAttributes:
        raise NotImplementedError

    def _attrs(self, mode: int, size: int = 0, mtime: float | None = None,
               nlink: int = 1, owner: Ownership = NO_OVERRIDE) -> pyfuse3.EntryAttributes:
        opts = self.fs.options
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.ino
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_uid = opts.uid if owner.uid is None else owner.uid
        a.st_gid = opts.gid if owner.gid is None else owner.gid
        a.st_size = size
        a.st_blksize = 1 << 22
        a.st_blocks = (size + 511) // 512
        ns = int((mtime if mtime is not None else self.fs.mount_time) * 1e9)
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = ns
        a.attr_timeout = a.entry_timeout = opts.attr_timeout
        return a


class DirNode(Node):
    is_dir = True

    async def attributes(self) -> pyfuse3.EntryAttributes:
        mode = self.fs.options.dir_mode()
        if self.read_only or self.fs.options.ro:
            mode &= ~0o222
        return self._attrs(stat.S_IFDIR | mode, nlink=2)

    async def lookup(self, name: str) -> Node:
        raise RadosFSError(errno.ENOENT, name)

    async def find(self, name: str) -> Node | None:
        """lookup, with None for a name that does not exist."""
        try:
            return await self.lookup(name)
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return None

    async def rename_target(self, name: str, flags: int) -> Node | None:
        """What a rename to `name` would replace: None, or the existing file (EEXIST with
        RENAME_NOREPLACE, EISDIR for a directory)."""
        target = await self.find(name)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise RadosFSError(errno.EEXIST, f"{name} exists")
            if target.is_dir:
                raise RadosFSError(errno.EISDIR, f"{name} is a directory")
        return target

    def entries(self) -> AsyncIterator[list[tuple[str, Node, pyfuse3.EntryAttributes]]]:
        """Yield the listing in batches, so `ls` of a big pool starts answering at once."""
        raise NotImplementedError

    async def mkdir(self, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "cannot make a directory here")

    async def rmdir(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove this directory")

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        raise RadosFSError(errno.EPERM, "cannot create files here")

    async def unlink(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove files here")


class FileNode(Node):
    """A regular file backed by something the page cache can hold."""

    def __init__(self, fs: FileSystem, key: Hashable) -> None:
        super().__init__(fs, key)
        self.mtime: float | None = None
        self.kernel_size: int | None = None
        self.owner: Ownership = NO_OVERRIDE

    def backend(self):
        raise NotImplementedError

    async def stored_attrs(self) -> tuple[int, float]:
        """(size, mtime) as stored in the cluster."""
        raise NotImplementedError

    async def attributes(self) -> pyfuse3.EntryAttributes:
        cached = self.fs.cache.get(self.backend_key)
        if cached is not None and (cached.dirty or cached.opens):
            size, mtime = cached.size, self.mtime
            if mtime is None:
                mtime = (await self.stored_attrs())[1]
        else:
            size, mtime = await self.stored_attrs()  # the cache revalidates at open
        return self.file_attrs(size, mtime)

    def file_attrs(self, size: int, mtime: float) -> pyfuse3.EntryAttributes:
        self.kernel_size = size  # what the kernel now believes (see Operations.open)
        mode = self.fs.options.file_mode() if self.owner.mode is None else self.owner.mode
        if self.read_only or self.fs.options.ro:
            mode &= ~0o222
        return self._attrs(stat.S_IFREG | mode, size, mtime, owner=self.owner)

    @property
    def backend_key(self) -> Hashable:
        return self.key


class RootNode(DirNode):
    """The mount root: one directory per pool."""

    def __init__(self, fs: FileSystem) -> None:
        super().__init__(fs, ("root",))

    async def lookup(self, name: str) -> Node:
        if not await self.fs.conn.pool_exists(name):
            await self.fs.conn.latest_osdmap()  # made by another client just now?
            if not await self.fs.conn.pool_exists(name):
                raise RadosFSError(errno.ENOENT, f"no pool {name}")
        from .images import image_pool_node  # images imports this module
        node = await image_pool_node(self.fs, name)
        if node is not None:
            return node
        return self.fs.table.get(("pool", name, ""), lambda: PoolDir(self.fs, name, ""))

    async def entries(self):
        await self.fs.conn.latest_osdmap()  # pools made or removed elsewhere just now
        pools = await self.fs.conn.list_pools()
        batch = []
        from .images import image_pool_node  # images imports this module
        for name in sorted(pools):
            node = await image_pool_node(self.fs, name)
            if node is None:
                node = self.fs.table.get(("pool", name, ""),
                                         lambda n=name: PoolDir(self.fs, n, ""))
            batch.append((name, node, await node.attributes()))
        yield batch

    async def mkdir(self, name: str) -> Node:
        check_component(name)
        if await self.fs.conn.pool_exists(name):
            raise RadosFSError(errno.EEXIST, f"pool {name} exists")
        await self.fs.conn.create_pool(name)
        log.info("created pool %s", name)
        return await self.lookup(name)

    async def rmdir(self, name: str) -> None:
        if not await self.fs.conn.pool_exists(name):
            raise RadosFSError(errno.ENOENT, f"no pool {name}")
        if not self.fs.options.allow_pool_delete:
            raise RadosFSError(errno.EPERM, f"pool {name} not removed: mount with "
                                            f"allow_pool_delete to remove pools")
        io = await self.fs.conn.ioctx(name)
        it = await self.fs.bridge.run(io.list_objects)
        first = await self.fs.bridge.run(lambda: list(itertools.islice(it, 1)))
        if first:
            raise RadosFSError(errno.ENOTEMPTY, f"pool {name} is not empty")
        try:
            await self.fs.conn.delete_pool(name)
        except rados.Error as exc:
            if errno_of(exc) == errno.EPERM:
                raise RadosFSError(errno.EPERM, f"the cluster refused to delete pool {name} "
                                                f"(mon_allow_pool_delete is false?)") from exc
            raise
        self.fs.table.drop_prefix(("pool", name))
        log.info("removed pool %s", name)

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        raise RadosFSError(errno.EPERM, "only pools (directories) live at the top level")


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


class ObjectFile(FileNode):
    """A file of an object pool: one RADOS object, or a striped set past the threshold."""

    def __init__(self, fs: FileSystem, pool: str, oid: str, snap: str | None = None,
                 ioctx: rados.Ioctx | None = None) -> None:
        super().__init__(fs, ("obj", pool, snap, oid))
        self.pool = pool
        self.oid = oid
        self.snap = snap
        self.read_only = snap is not None
        self._ioctx = ioctx
        self._backend: ObjectBackend | None = None
        self._striped: StripedData | None = None
        self._fresh: tuple[int, float, float] | None = None
        self.created: tuple[int, Hashable] | None = None  # version right after create

    def remember(self, size: int, mtime: float, striped: StripedData | None = None,
                 owner: Ownership | None = None, fresh: bool = False) -> None:
        """What a lookup or listing just read; `fresh` lets the getattr that follows
        within the same request use it instead of asking the cluster again."""
        self.mtime = mtime
        if owner is not None:
            self.owner = owner
        self._fresh = (size, mtime, time.monotonic()) if fresh else None
        if striped is not None and self._backend is None:
            self._striped = striped

    @property
    def striped(self) -> bool:
        return (self._backend.striped if self._backend else self._striped) is not None

    async def attributes_from(self, size: int, mtime: float) -> pyfuse3.EntryAttributes:
        cached = self.fs.cache.get(self.key)
        if cached is not None and (cached.dirty or cached.opens):
            return self.file_attrs(cached.size, self.mtime or mtime)
        return self.file_attrs(size, mtime)

    async def ioctx(self) -> rados.Ioctx:
        return self._ioctx or await self.fs.conn.ioctx(self.pool)

    async def backend(self) -> ObjectBackend:
        if self._backend is None:
            self._backend = ObjectBackend(self.fs.bridge, await self.ioctx(), self.pool,
                                          self.oid, self.snap, self._striped)
        return self._backend

    async def stored_attrs(self) -> tuple[int, float]:
        fresh, self._fresh = self._fresh, None
        if fresh is not None and time.monotonic() - fresh[2] < FRESH_SECONDS:
            return fresh[0], fresh[1]
        backend = await self.backend()
        async with concurrently() as nursery:
            nursery.start_soon(self._fetch_owner, backend)
            size, mtime = await self._stat(backend)
        return size, mtime

    async def _fetch_owner(self, backend: ObjectBackend) -> None:
        if await self.fs.has_overrides(self.pool, backend.ioctx):
            self.owner = await self.fs.bridge.run(read_ownership, backend.ioctx,
                                                  backend.head_oid)

    async def _stat(self, backend: ObjectBackend) -> tuple[int, float]:
        try:
            size, mtime = await backend.stat()
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT or backend.striped is not None:
                raise
            # Converted to the striped layout (by another client) since we looked.
            head = await read_head(self.fs.bridge, backend.ioctx, self.oid)
            if head is None:
                raise
            backend.striped = StripedData(self.fs.bridge, backend.ioctx, self.oid, *head)
            size, mtime = await backend.stat()
        self.mtime = mtime
        return size, mtime

    async def _head(self) -> tuple[rados.Ioctx, str]:
        backend = await self.backend()
        return backend.ioctx, backend.head_oid

    async def get_xattr(self, key: str) -> bytes:
        if key == ATTRS_XATTR or self.striped and key in INTERNAL_XATTRS:
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
        return sorted(n for n in names if n not in hidden and n != ATTRS_XATTR)

    async def _meta_op(self, build) -> None:
        """Change xattrs without touching the mtime (RADOS would stamp "now"; in POSIX
        only ctime changes): chmod after utimens, as rsync does, keeps the time."""
        io, oid = await self._head()
        _, mtime = await stat_object(self.fs.bridge, io, oid)
        await self.fs.bridge.run(operate, io, oid, build, mtime)

    async def set_xattr(self, key: str, value: bytes) -> None:
        if key == ATTRS_XATTR or self.striped and key in INTERNAL_XATTRS:
            raise RadosFSError(errno.EPERM, f"{key} is kept by radosfs itself")
        await self._meta_op(lambda op: op.set_xattr(key, value))

    async def remove_xattr(self, key: str) -> None:
        if key not in await self.list_xattrs():
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        await self._meta_op(lambda op: op.rm_xattr(key))

    async def set_ownership(self, owner: Ownership) -> None:
        """chmod/chown: store the override on the object (see ownership.py)."""
        io, _ = await self._head()
        await mark_pool(self.fs.bridge, io, self.fs.pool_flag(self.pool))
        await self._meta_op(lambda op: op.set_xattr(ATTRS_XATTR, owner.encode()))
        self.owner = owner

    async def set_mtime(self, mtime: float) -> None:
        io, oid = await self._head()
        # A write op that changes no data but carries the mtime we want stored.
        await self.fs.bridge.run(operate, io, oid, lambda op: op.write(b"", 0), mtime)
        self.mtime = float(int(mtime))

    async def remove(self) -> None:
        await self.fs.cache.forget(self.key)
        await (await self.backend()).remove()

    async def rename_to(self, target: ObjectFile) -> None:
        """RADOS has no rename: copy data, xattrs and mtime to the target, then remove us.

        Not atomic: a crash in between leaves both names (never neither).
        """
        src = await self.backend()
        size, mtime = await src.stat()
        xattrs = {k: await self.get_xattr(k) for k in await self.list_xattrs()}
        try:
            await target.remove()
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        target._backend = None
        target._striped = None
        dst = await target.backend()
        io = dst.ioctx
        await self.fs.bridge.run(operate, io, target.oid, lambda op: op.new(
            rados.LIBRADOS_CREATE_EXCLUSIVE))
        pos = 0
        while pos < size:
            chunk = await src.read(pos, min(size - pos, MAX_IO))
            if not chunk:
                break
            await dst.write(pos, chunk)
            pos += len(chunk)
        if pos < size:
            await dst.truncate(size)
        for k, v in xattrs.items():
            await target.set_xattr(k, v)
        if self.owner != NO_OVERRIDE:
            await target.set_ownership(self.owner)
        await target.set_mtime(mtime)
        await src.remove()


async def _object_xattrs(fs: FileSystem, io: rados.Ioctx, oid: str) -> dict[str, bytes]:
    return await fs.bridge.run(lambda: dict(io.get_xattrs(oid)))


class InodeTable:
    """Stable inode numbers for node keys (never reused during a mount)."""

    def __init__(self) -> None:
        self.by_ino: dict[int, Node] = {}
        self.by_key: dict[Hashable, Node] = {}
        self._next = pyfuse3.ROOT_INODE + 1

    def add_root(self, node: Node) -> None:
        node.ino = pyfuse3.ROOT_INODE
        self.by_ino[node.ino] = node
        self.by_key[node.key] = node

    def get(self, key: Hashable, make) -> Node:
        node = self.by_key.get(key)
        if node is None:
            node = make()
            node.ino = self._next
            self._next += 1
            self.by_key[key] = node
            self.by_ino[node.ino] = node
        return node

    def node(self, ino: int) -> Node:
        node = self.by_ino.get(ino)
        if node is None:
            raise RadosFSError(errno.ENOENT, f"stale inode {ino}")
        return node

    def drop(self, key: Hashable) -> None:
        """Forget the name (the inode stays valid for open handles until forget)."""
        self.by_key.pop(key, None)

    def drop_prefix(self, prefix: tuple) -> None:
        for key in [k for k in self.by_key if isinstance(k, tuple) and k[:len(prefix)] == prefix]:
            self.by_key.pop(key, None)

    def rekey(self, node: Node, key: Hashable) -> None:
        self.by_key.pop(node.key, None)
        node.key = key
        self.by_key[key] = node
