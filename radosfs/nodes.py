"""The tree of node kinds, and what they share: base classes, the root, the inode table.

Each node answers for itself (attributes, lookup, listing, open); `operations.Operations`
only dispatches to them. Nodes are kept in an `InodeTable` by a stable key, so a name gets
the same inode number for the life of the mount. The kinds live one module each:
`pooldir` (object pools and their directories), `objectfile` (RADOS objects as files),
`images` (image pools and RBD images), `snapshots` (`.snap`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import stat
from typing import TYPE_CHECKING, AsyncIterator, Hashable

import pyfuse3
import rados

from .errors import RadosFSError, errno_of
from .ownership import NO_OVERRIDE, Ownership

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
        raise RadosFSError(errno.ENAMETOOLONG, "name component longer than 255 bytes")
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
        return self.fs.table.get(("pool", name, ""), lambda: pooldir.PoolDir(self.fs, name, ""))

    async def entries(self):
        await self.fs.conn.latest_osdmap()  # pools made or removed elsewhere just now
        pools = await self.fs.conn.list_pools()
        batch = []
        from .images import image_pool_node  # images imports this module
        for name in sorted(pools):
            node = await image_pool_node(self.fs, name)
            if node is None:
                node = self.fs.table.get(("pool", name, ""),
                                         lambda n=name: pooldir.PoolDir(self.fs, n, ""))
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


# The kinds RootNode makes; imported last because they build on the classes above.
from . import pooldir  # noqa: E402
