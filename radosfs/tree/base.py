"""The node protocol: what every node of the tree answers, with the defaults a kind that
does not support something gives (each with its errno).

Each node answers for itself (attributes, lookup, listing, open, xattrs, rename);
`operations.Operations` only decodes requests and dispatches here. Children are built by
`Kinds` (tree/kinds.py), reached as `node.kinds`, so no kind imports another.
"""
from __future__ import annotations

import errno
import stat
import time
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Hashable

import pyfuse3

from ..cache import CachedFile, PageCache
from ..cache.backend import Backend
from ..errors import RadosFSError
from ..store.keys import StoreKey
from ..store.ownership import NO_OVERRIDE, Ownership
from ..store.striper import MAX_FILE_SIZE
from .context import MountContext
from .inodes import NodeKey

FRESH_SECONDS = 0.05       # a lookup's stat answers the getattr right after it
LOOKUP_OPEN_WINDOW = 0.05  # ... and the open of the same file right after it
Entry = tuple[str, "Node", pyfuse3.EntryAttributes]


class Node:
    """Something with an inode number."""
    is_dir = False
    read_only = False
    #: the directory's entries are snapshots: they are taken and removed, never renamed
    snapshot_names = False
    #: xattrs a node shows beyond the stored ones (e.g. `ceph.snap.btime`)
    virtual_xattrs: dict[str, bytes] = {}

    def __init__(self, fs: MountContext, key: NodeKey) -> None:
        self.fs = fs
        self.key = key
        self.ino = 0

    @property
    def kinds(self) -> Kinds:
        return self.fs.kinds

    @property
    def cache(self) -> PageCache:
        return self.fs.cache

    def describe(self) -> str:
        return self.key.describe()

    @property
    def pinned(self) -> bool:
        """Must stay in the inode table even once the kernel forgot it (see
        InodeTable.remove): it holds what a new node for its name would not know."""
        return False

    @property
    def writable(self) -> bool:
        """Neither a ro mount, nor a read-only node, nor in a pool of another application
        (foreign_pools=ro, the default: see docs/options.md)."""
        return not (self.fs.options.ro or self.read_only
                    or self.fs.foreign_read_only(getattr(self, "pool", None)))

    def check_writable(self) -> None:
        if not self.writable:
            raise RadosFSError(errno.EROFS, "read-only")

    def shown_perm(self, perm: int) -> int:
        """The permission bits `ls -l` shows for stored bits `perm`: without write bits
        where the whole mount or pool is read-only (`ro`, foreign_pools=ro); the real ones
        on read-only nodes under `.snap`, as CephFS shows them, so that `cp -a`, `rsync -a`
        and `tar` restore a backup with its modes -- every change there is refused with
        EROFS all the same (`check_writable`)."""
        if self.fs.options.ro or self.fs.foreign_read_only(getattr(self, "pool", None)):
            return perm & ~0o222
        return perm

    async def attributes(self) -> pyfuse3.EntryAttributes:
        raise NotImplementedError

    def _attrs(self, mode: int, size: int = 0, mtime: float | None = None,
               nlink: int = 1, owner: Ownership = NO_OVERRIDE,
               times: tuple[int, int, int] | None = None) -> pyfuse3.EntryAttributes:
        """`times` = (atime, mtime, ctime) in ns; without it all three are `mtime`."""
        opts = self.fs.options
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.ino
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_uid = opts.uid if owner.uid is None else owner.uid
        a.st_gid = opts.gid if owner.gid is None else owner.gid
        a.st_size = min(size, (1 << 63) - 1)
        a.st_blksize = 1 << 22
        a.st_blocks = (size + 511) // 512
        if times is None:
            ns = int((mtime if mtime is not None else self.fs.mount_time) * 1e9)
            times = (ns, ns, ns)
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = times
        a.attr_timeout = a.entry_timeout = opts.attr_timeout
        return a

    # ---- metadata: what a kind does not store is refused -------------------------------

    async def get_xattr(self, key: str) -> bytes:
        raise RadosFSError(errno.ENODATA, f"no xattr {key}")

    async def list_xattrs(self) -> list[str]:
        return []

    async def set_xattr(self, key: str, value: bytes) -> None:
        raise RadosFSError(errno.ENOTSUP, "only user.* xattrs on files are stored")

    # `ceph.*` and other names outside user.*: what radosfs itself shows (never stored)

    async def get_ceph_xattr(self, name: str) -> bytes:
        """Asked for `security.capability` on every write: answered without a round trip
        unless a kind knows the name."""
        value = self.virtual_xattrs.get(name)
        if value is None:
            raise RadosFSError(errno.ENODATA, f"no xattr {name}")
        return value

    async def set_ceph_xattr(self, name: str, value: bytes) -> None:
        raise RadosFSError(errno.ENOTSUP, "only user.* xattrs on files are stored")

    async def remove_ceph_xattr(self, name: str) -> None:
        raise RadosFSError(errno.ENODATA, f"no xattr {name}")

    async def remove_xattr(self, key: str) -> None:
        raise RadosFSError(errno.ENODATA, f"no xattr {key}")

    async def set_ownership(self, owner: Ownership) -> None:
        self.check_writable()
        raise RadosFSError(errno.EPERM, f"the mode and owner of {self.describe()} come from "
                                        "mount options (uid=, gid=, umask=)")

    @property
    def owner(self) -> Ownership:
        return NO_OVERRIDE

    async def truncate(self, size: int) -> None:
        raise RadosFSError(errno.EISDIR, "is a directory")

    async def touch(self, mtime: int | None, atime: int | None = None) -> None:
        """utimens (times in ns, None = leave as is). Refused where nothing stores them:
        never accepted and ignored."""
        self.check_writable()
        raise RadosFSError(errno.EPERM, f"the times of {self.describe()} are not stored")

    async def readlink(self) -> bytes:
        raise RadosFSError(errno.EINVAL, "not a symlink")


class DirNode(Node):
    is_dir = True

    async def attributes(self) -> pyfuse3.EntryAttributes:
        return self.dir_attrs(NO_OVERRIDE, None)

    def dir_attrs(self, record: Ownership, stored: float | None) -> pyfuse3.EntryAttributes:
        """A directory's attributes from its record and its marker's RADOS mtime (None: no
        marker: the mount time)."""
        mode = self.shown_perm(self.fs.options.dir_mode() if record.mode is None
                               else record.mode)
        return self._attrs(stat.S_IFDIR | mode, nlink=2, owner=record,
                           times=record.shown(stored, self.fs.mount_time))

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

    def entries(self) -> AsyncIterator[list[Entry]]:
        """Yield the listing in batches, so `ls` of a big pool starts answering at once."""
        raise NotImplementedError

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """`owner`: the mode (and owner) asked for beyond the mount's defaults."""
        raise RadosFSError(errno.EPERM, "cannot make a directory here")

    async def symlink(self, name: str, target: bytes, owner: Ownership = NO_OVERRIDE
                      ) -> Node:
        raise RadosFSError(errno.EPERM, "cannot make symlinks here")

    async def mknod(self, name: str, mode: int) -> Node:
        """Device nodes, FIFOs and sockets: nothing in RADOS could hold them."""
        raise RadosFSError(errno.EPERM, "device nodes, FIFOs and sockets are not supported")

    async def link(self, node: Node, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "hard links are not supported (RADOS objects have "
                                        "one name each)")

    async def rmdir(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove this directory")

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        raise RadosFSError(errno.EPERM, "cannot create files here")

    async def unlink(self, name: str) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove files here")

    async def rename(self, old: str, new_parent: DirNode, new: str, flags: int) -> None:
        """Move child `old` to `new` in `new_parent`. mv falls back to copy + remove on
        EXDEV, which is what radosfs would do anyway."""
        raise RadosFSError(errno.EXDEV, "rename of directories or across pools: "
                                        "copy and remove instead")


class FileNode(Node):
    """A regular file backed by something the page cache can hold."""
    #: the kernel must not cache its pages (contents made at open, e.g. the stats file)
    direct_io = False

    def __init__(self, fs: MountContext, key: NodeKey) -> None:
        super().__init__(fs, key)
        self.mtime: float | None = None
        self.kernel_size: int | None = None
        self._owner: Ownership = NO_OVERRIDE
        #: (size, version token) right after create: the open that follows need not ask
        self.created: tuple[int, Any] | None = None
        #: unlinked (or renamed over) while open: the cached file that lives on until its
        #: last close, detached from any stored data (see keep_while_open)
        self._orphan: CachedFile | None = None

    @property
    def owner(self) -> Ownership:
        return self._owner

    @owner.setter
    def owner(self, value: Ownership) -> None:
        self._owner = value

    # ---- where its data is: stored, or (unlinked while open) detached in memory ---------

    @property
    def pinned(self) -> bool:
        """Unlinked while open, or its cached file open or holding unwritten data: that
        state lives on the node (and the cache's file), so it stays."""
        if self._orphan is not None:
            return True
        f = self.cache.get(self.stored_key)
        return f is not None and f.in_use

    @property
    def orphaned(self) -> bool:
        """Removed while open: the file lives on in this mount until its last close."""
        return self._orphan is not None

    @property
    def backend_key(self) -> Hashable:
        """The key its data has in the page cache."""
        return self._orphan.key if self._orphan is not None else self.stored_key

    async def backend(self) -> Backend:
        if self._orphan is not None:
            return self._orphan.backend
        return await self.stored_backend()

    async def stored_attrs(self) -> tuple[int, float]:
        """(size, mtime): as stored in the cluster, or as the detached file has them."""
        if self._orphan is not None:
            return self._orphan.size, self.mtime or self.fs.mount_time
        return await self.stat_stored()

    @property
    def stored_key(self) -> StoreKey:
        """The key of its stored data in the page cache (see store/keys.py)."""
        raise NotImplementedError

    async def stored_backend(self) -> Backend:
        raise NotImplementedError

    async def stat_stored(self) -> tuple[int, float]:
        """(size, mtime) as stored in the cluster."""
        raise NotImplementedError

    async def keep_while_open(self) -> None:
        """Its stored data is about to be removed (unlink, or a rename over it): the
        descriptors still open on it keep the file until their last close, detached from
        the cluster (`PageCache.detach`: what it held is copied into memory first); with
        none open, its cached data is dropped."""
        if self._orphan is not None:
            raise RadosFSError(errno.ENOENT, f"{self.describe()} was removed already")
        f = self.cache.get(self.stored_key)
        if f is not None and f.opens > 0:
            await self.cache.detach(f)
            self._orphan = f
        else:
            await self.cache.forget(self.stored_key)

    def remember(self, size: int, mtime: float, owner: Ownership | None = None,
                 fresh: bool = False) -> None:
        """What a lookup or listing just read about this file."""
        self.mtime = mtime
        if owner is not None:
            self.owner = owner

    async def attributes(self) -> pyfuse3.EntryAttributes:
        cached = self.cache.get(self.backend_key)
        if cached is not None and cached.in_use:
            size, mtime = cached.size, self.mtime
            if mtime is None:
                mtime = (await self.stored_attrs())[1]
        else:
            size, mtime = await self.stored_attrs()  # the cache revalidates at open
        return self.file_attrs(size, mtime)

    async def attributes_from(self, size: int, mtime: float | None
                              ) -> pyfuse3.EntryAttributes:
        """Attributes from what a listing just read (the cache knows better while in use);
        no mtime stored: the mount time."""
        mtime = mtime if mtime is not None else self.fs.mount_time
        cached = self.cache.get(self.backend_key)
        if cached is not None and cached.in_use:
            return self.file_attrs(cached.size, self.mtime or mtime)
        return self.file_attrs(size, mtime)

    def file_attrs(self, size: int, mtime: float) -> pyfuse3.EntryAttributes:
        """From the size and the stored (RADOS) mtime; the record's exact times while they
        hold (see store/ownership.py)."""
        self.kernel_size = size  # what the kernel now believes (see Operations.open)
        owner = self.owner
        times = owner.shown(mtime, self.fs.mount_time)
        if owner.symlink:
            return self._attrs(stat.S_IFLNK | 0o777, size, owner=owner, times=times)
        mode = self.shown_perm(self.fs.options.file_mode() if owner.mode is None
                               else owner.mode)
        return self._attrs(stat.S_IFREG | mode, size, owner=owner, times=times)

    # ---- data ----------------------------------------------------------------------------

    async def open(self, writable: bool, truncate: bool) -> tuple[CachedFile, bool]:
        """The cached file for a new handle, and whether the kernel may keep its pages."""
        if writable:
            self.check_writable()
        known, self.created = self.created, None
        f, keep = await self.cache.open(await self.backend(), known)
        if not writable:
            await self.accessed()
        if writable and truncate:
            # libfuse enables atomic O_TRUNC: the kernel sends no separate setattr.
            await self.cache.truncate(f, 0)
            self.mtime = time.time()
            keep = False
        return f, keep

    async def write(self, f: CachedFile, offset: int, data: bytes, direct: bool = False
                    ) -> int:
        """`direct`: from an O_DIRECT handle (see PageCache.write_direct)."""
        self.check_writable()
        self._check_size(offset + len(data))
        n = await (self.cache.write_direct if direct else self.cache.write)(f, offset, data)
        self.mtime = time.time()
        return n

    @staticmethod
    def _check_size(size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise RadosFSError(errno.EFBIG, f"past the largest file size ({MAX_FILE_SIZE})")

    async def truncate(self, size: int) -> None:
        self.check_writable()
        self._check_size(size)
        f, _ = await self.cache.open(await self.backend())
        try:
            await self.cache.truncate(f, size)
        finally:
            await self.cache.release(f)
        self.mtime = time.time()

    async def touch(self, mtime: int | None, atime: int | None = None) -> None:
        """utimens: dirty data first (its write would stamp "now"), then the stored times."""
        self.check_writable()
        f = self.cache.get(self.backend_key)
        if f is not None and f.dirty:
            await self.cache.flush(f)
        await self.set_times(mtime, atime)
        if f is not None:
            f.version = await f.backend.version()

    async def set_times(self, mtime: int | None, atime: int | None) -> None:
        raise RadosFSError(errno.EPERM, "this file's times cannot be set")

    async def accessed(self) -> None:
        """Opened for reading: the atime moves as the mount's atime choice says (kinds
        that store no atime: never)."""
        return None

    async def remove(self) -> None:
        raise RadosFSError(errno.EPERM, "cannot remove this file")

    async def rename_to(self, target: FileNode) -> None:
        raise RadosFSError(errno.EXDEV, "cannot move this file: copy and remove instead")


class Kinds(ABC):
    """Builds every node of the tree: parents ask here for their children (by what they
    are, not by class), so no kind imports another. One per mount and namespace
    (tree/kinds.py): the nodes it builds are of its namespace."""

    @abstractmethod
    def in_namespace(self, namespace: str) -> Kinds:
        """The kinds that build nodes of RADOS (or RBD) namespace `namespace`."""

    @abstractmethod
    def root(self) -> DirNode: ...

    @abstractmethod
    async def pool(self, name: str) -> DirNode:
        """The directory of pool `name`: an image pool or an object pool."""

    @abstractmethod
    def pool_dir(self, pool: str, prefix: str, view: Any = None) -> DirNode:
        """A directory of an object pool (prefix '' = the pool), at HEAD or at a view."""

    @abstractmethod
    def namespaces(self, pool: str) -> DirNode:
        """`.ns` of an object pool: one directory per RADOS namespace."""

    @abstractmethod
    def object_file(self, pool: str, oid: str, view: Any = None) -> FileNode: ...

    @abstractmethod
    def snap_root(self, pool: str, images: bool) -> DirNode:
        """`.snap` of a pool."""

    @abstractmethod
    def image_snapshot(self, pool: str, name: str, members: list) -> DirNode: ...

    @abstractmethod
    def image_file(self, pool: str, name: str, image_id: str, snapshot: str | None = None,
                   snap_id: int | None = None) -> FileNode: ...

    @abstractmethod
    def stats_file(self) -> FileNode: ...

    @abstractmethod
    def forget_pool(self, pool: str) -> None:
        """A pool was removed: none of its names lead anywhere any more."""
