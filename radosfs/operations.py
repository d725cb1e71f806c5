"""FUSE dispatch: inode -> node, file handle -> cached file, exception -> errno.

Handlers validate, delegate to the node tree and the page cache, and turn every failure
into a `FUSEError` with the right errno (via `errors.to_errno`, which logs the cause). No
exception other than FUSEError ever leaves a handler: anything else would kill the mount.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import time
from typing import Any, Callable

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .cache import CachedFile, ReadState
from .errors import RadosFSError, to_errno
from .filesystem import FileSystem
from .images import ImagePool
from .nodes import DirNode, FileNode, Node, check_component
from .objectfile import ObjectFile
from .pooldir import PoolDir
from .ownership import Ownership

log = logging.getLogger(__name__)

STATS_NAME = ".radosfs-stats"   # read-only JSON counters at the mount root
FH_HANDLERS = {"read", "write", "flush", "fsync", "release", "readdir", "releasedir"}
XATTR_USER = "user."


def _name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RadosFSError(errno.EINVAL, "file names must be UTF-8 (RADOS object names are)")


def fuse_errors(fn: Callable) -> Callable:
    """Every handler: FUSEError passes, anything else is mapped (and logged) once here."""
    what = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 -- the one place errors become errnos
            raise FUSEError(to_errno(exc, f"{what}{self._describe(what, args)}")) from None
    return wrapper


class Handle:
    __slots__ = ("node", "file", "read_state", "writable")

    def __init__(self, node: FileNode, file: CachedFile | None, writable: bool) -> None:
        self.node = node
        self.file = file
        self.read_state = ReadState()
        self.writable = writable


class DirHandle:
    """A directory listing in progress: entries so far, more pulled as readdir asks."""

    def __init__(self, node: DirNode) -> None:
        self.node = node
        self.entries: list[tuple[bytes, pyfuse3.EntryAttributes]] = []
        self.source = None
        self.done = False


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: FileSystem) -> None:
        super().__init__()
        self.fs = fs
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self.stats_ino = 0

    # ---- helpers ---------------------------------------------------------------------

    def _describe(self, what: str, args: tuple) -> str:
        """The path(s) a failed request was about, for its log line."""
        parts = []
        for i, a in enumerate(args[:4]):
            if isinstance(a, bytes):
                parts.append(a.decode("utf-8", "replace")[:200])
            elif isinstance(a, int) and not isinstance(a, bool):
                if i == 0 and what in FH_HANDLERS:  # a file handle, not an inode
                    h = self.handles.get(a) or self.dirs.get(a)
                    node = h.node if h is not None else None
                else:
                    node = self.fs.table.by_ino.get(a)
                if node is not None:
                    parts.append("/".join(str(k) for k in node.key[1:] if k))
        return (" " + " ".join(parts)) if parts else ""

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _writable(self, node: Node) -> None:
        if self.fs.options.ro or node.read_only:
            raise RadosFSError(errno.EROFS, "read-only")

    def _dir(self, ino: int) -> DirNode:
        node = self.fs.table.node(ino)
        if not node.is_dir:
            raise RadosFSError(errno.ENOTDIR, "not a directory")
        return node  # type: ignore[return-value]

    def _file(self, ino: int) -> FileNode:
        node = self.fs.table.node(ino)
        if node.is_dir:
            raise RadosFSError(errno.EISDIR, "is a directory")
        return node  # type: ignore[return-value]

    async def _open_cached(self, node: FileNode) -> tuple[CachedFile, bool]:
        return await self.fs.cache.open(await node.backend())

    def _owner_for_create(self, mode: int, ctx) -> Ownership:
        """What a new file must remember beyond the mount's defaults (cp -p, rsync -a)."""
        opts = self.fs.options
        perm = mode & 0o7777 & ~(getattr(ctx, "umask", 0) or 0)
        return Ownership(perm if perm != opts.file_mode() else None,
                         ctx.uid if ctx is not None and ctx.uid != opts.uid else None,
                         ctx.gid if ctx is not None and ctx.gid != opts.gid else None)

    # ---- attributes and names --------------------------------------------------------

    @fuse_errors
    async def getattr(self, inode: int, ctx=None) -> pyfuse3.EntryAttributes:
        if inode == self.stats_ino and inode:
            return self._stats_attrs()
        return await self.fs.table.node(inode).attributes()

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        text = _name(name)
        if parent is self.fs.root and text == STATS_NAME:
            return self._stats_attrs()
        node = await parent.lookup(text)
        return await node.attributes()

    def _stats_attrs(self) -> pyfuse3.EntryAttributes:
        if not self.stats_ino:
            self.stats_ino = self.fs.table._next
            self.fs.table._next += 1
        a = self.fs.root._attrs(0o100444, 1 << 16)
        a.st_ino = self.stats_ino
        a.attr_timeout = a.entry_timeout = 0
        return a

    async def forget(self, inode_list) -> None:
        # Inode numbers are kept for the life of the mount (see nodes.InodeTable).
        return None

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx) -> pyfuse3.EntryAttributes:
        node = self.fs.table.node(inode)
        current = await node.attributes()
        mode = attr.st_mode & 0o7777 if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid and attr.st_uid not in (-1, 0xFFFFFFFF) else None
        gid = attr.st_gid if fields.update_gid and attr.st_gid not in (-1, 0xFFFFFFFF) else None
        changes = ((mode is not None and mode != current.st_mode & 0o7777)
                   or (uid is not None and uid != current.st_uid)
                   or (gid is not None and gid != current.st_gid))
        if changes:
            self._writable(node)
            if not isinstance(node, ObjectFile):
                raise RadosFSError(errno.EPERM, "mode and owner of directories and images "
                                                "come from mount options (uid=, gid=, umask=)")
            await node.set_ownership(node.owner.merged(mode, uid, gid))
        if fields.update_size:
            self._writable(node)
            if node.is_dir:
                raise RadosFSError(errno.EISDIR, "is a directory")
            f, _ = await self._open_cached(node)  # type: ignore[arg-type]
            try:
                await self.fs.cache.truncate(f, attr.st_size)
            finally:
                await self.fs.cache.release(f)
            node.mtime = time.time()  # type: ignore[union-attr]
        if fields.update_mtime and not node.is_dir:
            self._writable(node)
            await self._set_mtime(node, attr.st_mtime_ns / 1e9)  # type: ignore[arg-type]
        return await node.attributes()

    async def _set_mtime(self, node: FileNode, mtime: float) -> None:
        """utimens: the object's own mtime is set (whole seconds, as RADOS stores it)."""
        f = self.fs.cache.get(node.backend_key)
        if f is not None and f.dirty:
            await self.fs.cache.flush(f)
        await node.set_mtime(mtime)
        if f is not None:
            f.version = await f.backend.version()

    # ---- directories -----------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx) -> int:
        node = self._dir(inode)
        fh = self._fh()
        self.dirs[fh] = DirHandle(node)
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        dh = self.dirs[fh]
        i = start_id
        while True:
            while i < len(dh.entries):
                name, attrs = dh.entries[i]
                if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                    return
                i += 1
            if dh.done:
                return
            if dh.source is None:
                dh.source = dh.node.entries().__aiter__()
            try:
                batch = await dh.source.__anext__()
            except StopAsyncIteration:
                dh.done = True
                continue
            for name, node, attrs in batch:
                dh.entries.append((name.encode("utf-8"), attrs))

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        dh = self.dirs.pop(fh, None)
        if dh is not None and dh.source is not None:
            await dh.source.aclose()

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        self._writable(parent)
        text = _name(name)
        check_component(text)
        node = await parent.mkdir(text)
        return await node.attributes()

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx) -> None:
        parent = self._dir(parent_inode)
        self._writable(parent)
        await parent.rmdir(_name(name))

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx) -> None:
        parent = self._dir(parent_inode)
        self._writable(parent)
        await parent.unlink(_name(name))

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx) -> None:
        old_parent = self._dir(parent_inode_old)
        new_parent = self._dir(parent_inode_new)
        self._writable(old_parent)
        self._writable(new_parent)
        if getattr(old_parent, "is_snap_root", False) or getattr(new_parent, "is_snap_root",
                                                                 False):
            raise RadosFSError(errno.EROFS, "snapshots cannot be renamed")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise RadosFSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old_name, new_name = _name(name_old), _name(name_new)
        check_component(new_name)
        if isinstance(old_parent, ImagePool) or isinstance(new_parent, ImagePool):
            if old_parent is not new_parent:
                raise RadosFSError(errno.EXDEV, "images move only within their pool")
            await old_parent.rename(old_name, new_name, flags)
            return
        node = await old_parent.lookup(old_name)
        if not (isinstance(old_parent, PoolDir) and isinstance(new_parent, PoolDir)
                and old_parent.pool == new_parent.pool) or node.is_dir:
            # mv falls back to copy + remove on EXDEV, which is what we would do anyway.
            raise RadosFSError(errno.EXDEV, "rename of directories or across pools: "
                                            "copy and remove instead")
        target = await new_parent.rename_target(new_name, flags)
        assert isinstance(node, ObjectFile)
        f = self.fs.cache.get(node.backend_key)
        if f is not None and f.dirty:
            await self.fs.cache.flush(f)
        new_oid = new_parent.child_key(new_name)
        dst = target if target is not None else new_parent.file_node(new_oid)
        assert isinstance(dst, ObjectFile)
        old_key = node.key
        await node.rename_to(dst)
        await self.fs.cache.forget(old_key)
        self.fs.pool_index(new_parent.pool).add_path(new_oid)
        # The moved inode is the file at the new name from now on.
        self.fs.table.drop(dst.key)
        self.fs.table.rekey(node, dst.key)
        node.oid = new_oid
        node._backend, node._striped = dst._backend, dst._striped

    # ---- files -----------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx) -> pyfuse3.FileInfo:
        if inode == self.stats_ino and inode:
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise RadosFSError(errno.EACCES, "the stats file is read-only")
            fh = self._fh()
            self.handles[fh] = Handle(None, None, False)  # type: ignore[arg-type]
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        node = self._file(inode)
        writable = bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writable:
            self._writable(node)
        f, keep = await self._open_cached(node)
        if writable and flags & os.O_TRUNC:
            # libfuse enables atomic O_TRUNC: the kernel sends no separate setattr.
            await self.fs.cache.truncate(f, 0)
            node.mtime = time.time()
            keep = False
        if node.kernel_size is not None and node.kernel_size != f.size:
            # Changed elsewhere (close-to-open): the kernel's cached size is stale too.
            # attr_only never touches pages, so it cannot block on this very request.
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, True)
        fh = self._fh()
        self.handles[fh] = Handle(node, f, writable)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._dir(parent_inode)
        self._writable(parent)
        text = _name(name)
        check_component(text)
        node = await parent.create(text, self._owner_for_create(mode, ctx))
        known, node.created = getattr(node, "created", None), None
        f, _ = await self.fs.cache.open(await node.backend(), known)  # type: ignore[union-attr]
        fh = self._fh()
        self.handles[fh] = Handle(node, f, True)  # type: ignore[arg-type]
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), await node.attributes()

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        if h.file is None:  # the stats file
            data = json.dumps(self.fs.counters(), indent=1, sort_keys=True).encode() + b"\n"
            return data[off:off + size]
        return await self.fs.cache.read(h.file, off, size, h.read_state)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        if h.file is None or not h.writable:
            raise RadosFSError(errno.EBADF, "not open for writing")
        self._writable(h.node)
        n = await self.fs.cache.write(h.file, off, buf)
        h.node.mtime = time.time()
        return n

    @fuse_errors
    async def flush(self, fh: int) -> None:
        h = self.handles[fh]
        if h.file is not None and h.file.dirty:
            await self.fs.cache.flush(h.file)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self.handles[fh]
        if h.file is not None:
            await self.fs.cache.flush(h.file)

    @fuse_errors
    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None or h.file is None:
            return
        if h.file.dirty:
            try:
                await self.fs.cache.flush(h.file)
            except RadosFSError as exc:
                log.error("close of %s: %d dirty bytes could not be written (errno %d); "
                          "kept in the cache and retried at the next flush or umount",
                          "/".join(str(k) for k in h.node.key[1:] if k),
                          sum(p.dirty_hi - p.dirty_lo for p in h.file.pages.values()),
                          exc.errno)
        await self.fs.cache.release(h.file)

    # ---- xattrs ----------------------------------------------------------------------

    def _xattr_name(self, name: bytes) -> str | None:
        text = name.decode("utf-8", "replace")
        return text[len(XATTR_USER):] if text.startswith(XATTR_USER) else None

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx) -> bytes:
        node = self.fs.table.node(inode)
        virtual = getattr(node, "virtual_xattrs", None)
        if virtual and name.decode("utf-8", "replace") in virtual:
            return virtual[name.decode()]
        key = self._xattr_name(name)
        if key is None:
            # security.capability etc.: asked on every write; answer without a round trip.
            raise FUSEError(errno.ENODATA)
        if node.is_dir:
            raise FUSEError(errno.ENODATA)
        return await node.get_xattr(key)  # type: ignore[union-attr]

    @fuse_errors
    async def listxattr(self, inode: int, ctx) -> list[bytes]:
        node = self.fs.table.node(inode)
        if node.is_dir:
            return []
        names = await node.list_xattrs()  # type: ignore[union-attr]
        return [(XATTR_USER + n).encode() for n in names]

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx) -> None:
        node = self.fs.table.node(inode)
        self._writable(node)
        key = self._xattr_name(name)
        if key is None or node.is_dir or not key:
            raise RadosFSError(errno.ENOTSUP, "only user.* xattrs on files are stored")
        await node.set_xattr(key, value)  # type: ignore[union-attr]

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx) -> None:
        node = self.fs.table.node(inode)
        self._writable(node)
        key = self._xattr_name(name)
        if key is None or node.is_dir:
            raise FUSEError(errno.ENODATA)
        await node.remove_xattr(key)  # type: ignore[union-attr]

    # ---- the filesystem --------------------------------------------------------------

    @fuse_errors
    async def statfs(self, ctx) -> pyfuse3.StatvfsData:
        st = await self.fs.conn.cluster_stats()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = st["kb"] * 1024 // 4096
        s.f_bfree = s.f_bavail = st["kb_avail"] * 1024 // 4096
        s.f_files = st["num_objects"] + (1 << 30)
        s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s
