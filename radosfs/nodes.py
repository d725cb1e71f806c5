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

from .errors import RadosFSError, errno_of
from .objects import RadosObject, operate, stat_object

if TYPE_CHECKING:
    from .filesystem import FileSystem

log = logging.getLogger(__name__)

SNAPDIR = ".snap"
LIST_CHUNK = 1000          # objects pulled from the pool listing per thread hop
MAX_NAME_COMPONENT = 255   # bytes, as every Linux filesystem
MAX_OBJECT_NAME = 2048     # osd_max_object_name_len's default
INDEX_MIN_TTL = 2.0        # seconds a pool's directory index is trusted


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
               nlink: int = 1) -> pyfuse3.EntryAttributes:
        opts = self.fs.options
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.ino
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_uid = opts.uid
        a.st_gid = opts.gid
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

    def entries(self) -> AsyncIterator[list[tuple[str, Node, pyfuse3.EntryAttributes]]]:
        """Yield the listing in batches, so `ls` of a big pool starts answering at once."""
        raise NotImplementedError

    async def mkdir(self, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "cannot make a directory here")

    async def rmdir(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove this directory")

    async def create(self, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "cannot create files here")

    async def unlink(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove files here")


class FileNode(Node):
    """A regular file backed by something the page cache can hold."""

    def __init__(self, fs: FileSystem, key: Hashable) -> None:
        super().__init__(fs, key)
        self.mtime: float | None = None

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
            size, mtime = await self.stored_attrs()
            if cached is not None and cached.size != size:
                pass  # the cache revalidates on the next open
        return self.file_attrs(size, mtime)

    def file_attrs(self, size: int, mtime: float) -> pyfuse3.EntryAttributes:
        mode = self.fs.options.file_mode()
        if self.read_only or self.fs.options.ro:
            mode &= ~0o222
        return self._attrs(stat.S_IFREG | mode, size, mtime)

    @property
    def backend_key(self) -> Hashable:
        return self.key


class RootNode(DirNode):
    """The mount root: one directory per pool."""

    def __init__(self, fs: FileSystem) -> None:
        super().__init__(fs, ("root",))

    async def lookup(self, name: str) -> Node:
        if not await self.fs.conn.pool_exists(name):
            raise RadosFSError(errno.ENOENT, f"no pool {name}")
        return self.fs.table.get(("pool", name, ""), lambda: PoolDir(self.fs, name, ""))

    async def entries(self):
        pools = await self.fs.conn.list_pools()
        batch = []
        for name in sorted(pools):
            node = self.fs.table.get(("pool", name, ""), lambda n=name: PoolDir(self.fs, n, ""))
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

    async def create(self, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "only pools (directories) live at the top level")


class PoolIndex:
    """Which directories an object pool has, from a full listing (trusted briefly)."""

    def __init__(self) -> None:
        self.dirs: set[str] = set()
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

    def __init__(self, fs: FileSystem, pool: str, prefix: str) -> None:
        super().__init__(fs, ("pool", pool, prefix))
        self.pool = pool
        self.prefix = prefix

    async def ioctx(self) -> rados.Ioctx:
        return await self.fs.conn.ioctx(self.pool)

    def child_key(self, name: str) -> str:
        return self.prefix + name

    def file_node(self, oid: str) -> ObjectFile:
        return self.fs.table.get(("obj", self.pool, None, oid),
                                 lambda: ObjectFile(self.fs, self.pool, oid))

    def dir_node(self, prefix: str) -> PoolDir:
        return self.fs.table.get(("pool", self.pool, prefix),
                                 lambda: PoolDir(self.fs, self.pool, prefix))

    async def index(self) -> PoolIndex:
        idx = self.fs.pool_index(self.pool)
        async with idx.lock:
            if not idx.fresh():
                io = await self.ioctx()
                started = time.monotonic()

                def scan() -> set[str]:
                    dirs: set[str] = set()
                    for obj in io.list_objects():
                        parts = obj.key.split("/")
                        for i in range(1, len(parts)):
                            dirs.add("/".join(parts[:i]) + "/")
                    return dirs

                idx.dirs = await self.fs.bridge.run(scan)
                took = time.monotonic() - started
                idx.stamp = time.monotonic()
                idx.ttl = max(INDEX_MIN_TTL, 20 * took)
        return idx

    async def lookup(self, name: str) -> Node:
        check_component(name)
        oid = self.child_key(name)
        check_object_name(oid + "/")
        io = await self.ioctx()
        bridge = self.fs.bridge
        results: dict[str, tuple[int, float] | None] = {}

        async def probe(o: str) -> None:
            try:
                results[o] = await stat_object(bridge, io, o)
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                results[o] = None

        async with trio.open_nursery() as n:
            n.start_soon(probe, oid)
            n.start_soon(probe, oid + "/")
        if results[oid] is not None:
            node = self.file_node(oid)
            node.remember(*results[oid])
            return node
        cached = self.fs.cache.get(("obj", self.pool, None, oid))
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
        idx = self.fs.pool_index(self.pool)
        all_dirs: set[str] = set()
        plen = len(self.prefix)
        while True:
            chunk = await bridge.run(lambda: [o.key for o in itertools.islice(it, LIST_CHUNK)])
            if not chunk:
                break
            files: list[str] = []
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
                head, slash, _ = rest.partition("/")
                if slash:
                    if head not in seen_dirs:
                        seen_dirs.add(head)
                        dirs.append(head)
                else:
                    files.append(rest)
            batch = []
            for head in dirs:
                node = self.dir_node(self.prefix + head + "/")
                batch.append((head, node, await node.attributes()))
            batch.extend(await self._stat_files(io, files))
            if batch:
                yield batch
        idx.dirs = all_dirs
        idx.stamp = time.monotonic()

    async def _stat_files(self, io: rados.Ioctx, names: list[str]):
        """Stat a batch of objects concurrently (not one by one): `ls -l` of a big pool."""
        out: list = [None] * len(names)

        async def one(i: int, name: str) -> None:
            node = self.file_node(self.prefix + name)
            try:
                size, mtime = await stat_object(self.fs.bridge, io, node.oid)
            except RadosFSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # deleted after a snapshot, or just now: not listed
                raise
            node.remember(size, mtime)
            out[i] = (name, node, await node.attributes_from(size, mtime))

        async with trio.open_nursery() as n:
            for i, name in enumerate(names):
                n.start_soon(one, i, name)
        return [x for x in out if x is not None]

    async def mkdir(self, name: str) -> Node:
        node = await self._absent(name)
        marker = node + "/"
        io = await self.ioctx()
        await self.fs.bridge.run(_create_object, io, marker)
        self.fs.pool_index(self.pool).add_path(marker)
        return self.dir_node(marker)

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
        node = await self.lookup(name)
        if not node.is_dir:
            raise RadosFSError(errno.ENOTDIR, f"{self.pool}/{prefix} is a file")

        def has_children() -> bool:
            return any(o.key.startswith(prefix) and o.key != prefix for o in io.list_objects())

        if await self.fs.bridge.run(has_children):
            raise RadosFSError(errno.ENOTEMPTY, f"{self.pool}/{prefix} is not empty")
        try:
            await self.fs.bridge.aio(lambda cb: io.aio_remove(prefix, cb))
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:  # a directory kept only by its (gone) contents
                raise
        self.fs.pool_index(self.pool).dirs.discard(prefix)
        self.fs.table.drop(("pool", self.pool, prefix))

    async def create(self, name: str) -> Node:
        check_component(name)
        oid = self.child_key(name)
        check_object_name(oid)
        io = await self.ioctx()
        try:
            await self.fs.bridge.run(_create_object, io, oid)
        except rados.ObjectExists:
            pass  # raced with another creator: open what is there
        self.fs.pool_index(self.pool).add_path(oid)
        node = self.file_node(oid)
        node.remember(0, time.time())
        return node

    async def unlink(self, name: str) -> None:
        check_component(name)
        oid = self.child_key(name)
        node = await self.lookup(name)
        if node.is_dir:
            raise RadosFSError(errno.EISDIR, f"{self.pool}/{oid} is a directory")
        await self.fs.cache.forget(node.backend_key)
        io = await self.ioctx()
        await self.fs.bridge.aio(lambda cb: io.aio_remove(oid, cb))
        self.fs.table.drop(node.key)


def _create_object(io: rados.Ioctx, oid: str) -> None:
    """Exclusive create with a real mtime (operate_write_op defaults to 1970)."""
    operate(io, oid, lambda op: op.new(rados.LIBRADOS_CREATE_EXCLUSIVE))


class ObjectFile(FileNode):
    """One RADOS object as a regular file."""

    def __init__(self, fs: FileSystem, pool: str, oid: str, snap: str | None = None) -> None:
        super().__init__(fs, ("obj", pool, snap, oid))
        self.pool = pool
        self.oid = oid
        self.snap = snap
        self.read_only = snap is not None
        self._stored: tuple[int, float] | None = None

    def remember(self, size: int, mtime: float) -> None:
        self._stored = (size, mtime)
        self.mtime = mtime

    async def attributes_from(self, size: int, mtime: float) -> pyfuse3.EntryAttributes:
        cached = self.fs.cache.get(self.key)
        if cached is not None and (cached.dirty or cached.opens):
            return self.file_attrs(cached.size, self.mtime or mtime)
        return self.file_attrs(size, mtime)

    async def stored_attrs(self) -> tuple[int, float]:
        io = await self.fs.conn.ioctx(self.pool)
        size, mtime = await stat_object(self.fs.bridge, io, self.oid)
        self.remember(size, mtime)
        return size, mtime

    async def backend(self) -> RadosObject:
        io = await self.fs.conn.ioctx(self.pool)
        return RadosObject(self.fs.bridge, io, self.pool, self.oid, self.snap)

    async def ioctx(self) -> rados.Ioctx:
        return await self.fs.conn.ioctx(self.pool)

    async def get_xattr(self, key: str) -> bytes:
        io = await self.ioctx()
        try:
            return await self.fs.bridge.run(io.get_xattr, self.oid, key)
        except rados.Error as exc:
            if errno_of(exc) in (errno.ENODATA, errno.ENOENT):
                raise RadosFSError(errno.ENODATA, f"no xattr {key}") from None
            raise


    async def list_xattrs(self) -> list[str]:
        io = await self.ioctx()
        return sorted((await _object_xattrs(self.fs, io, self.oid)).keys())


    async def set_xattr(self, key: str, value: bytes) -> None:
        io = await self.ioctx()
        await self.fs.bridge.run(io.set_xattr, self.oid, key, value)


    async def remove_xattr(self, key: str) -> None:
        io = await self.ioctx()
        names = await self.list_xattrs()
        if key not in names:
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        await self.fs.bridge.run(io.rm_xattr, self.oid, key)


    async def set_mtime(self, mtime: float) -> None:
        io = await self.ioctx()

        # A write op that changes no data but carries the mtime we want stored.
        await self.fs.bridge.run(operate, io, self.oid, lambda op: op.write(b"", 0), mtime)
        self.mtime = float(int(mtime))


    async def rename_to(self, new_oid: str) -> None:
        """RADOS has no rename: copy data and xattrs to the new name, then remove the old one."""
        from .objects import MAX_IO, read_object, write_object
        io = await self.ioctx()
        bridge = self.fs.bridge
        size, mtime = await stat_object(bridge, io, self.oid)
        xattrs = await _object_xattrs(self.fs, io, self.oid)
        first = await read_object(bridge, io, self.oid, 0, min(size, MAX_IO))
        # write_full replaces whatever the target held (rename over an existing file).
        await bridge.aio(lambda cb: io.aio_write_full(new_oid, first, cb), len(first))
        pos = len(first)
        while pos < size:
            chunk = await read_object(bridge, io, self.oid, pos, min(size - pos, MAX_IO))
            await write_object(bridge, io, new_oid, pos, chunk)
            pos += len(chunk)
        old = await _object_xattrs(self.fs, io, new_oid)

        def copy_meta(op: rados.WriteOp) -> None:
            for k in old:
                if k not in xattrs:
                    op.rm_xattr(k)
            for k, v in xattrs.items():
                op.set_xattr(k, v)

        await bridge.run(operate, io, new_oid, copy_meta, mtime)
        await bridge.aio(lambda cb: io.aio_remove(self.oid, cb))


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
