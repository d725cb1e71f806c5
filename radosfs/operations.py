"""FUSE dispatch: inode -> node, file handle -> cached file, exception -> errno.

Handlers validate, delegate to the node tree and the page cache, and turn every failure
into a `FUSEError` with the right errno (via `errors.to_errno`, which logs the cause). No
exception other than FUSEError ever leaves a handler: anything else would kill the mount.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from typing import Any, Callable, cast

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .cache import CachedFile, ReadState
from .errors import RadosFSError, errno_of, printable, to_errno
from .store.ownership import Ownership
from .store.pool_quota import pool_quota
from .tree.base import DirNode, FileNode, Node
from .tree.context import MountContext
from .tree.names import check_component

log = logging.getLogger(__name__)

FH_HANDLERS = {"read", "write", "flush", "fsync", "release", "readdir", "releasedir"}
XATTR_USER = "user."
# The kernel answers a failed revalidation with a fresh lookup of the same name: a lookup
# that timed out this recently fails at once instead of waiting op_timeout again.
LOOKUP_FAIL_FAST = 2.0


def _name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RadosFSError(errno.EINVAL, "file names must be UTF-8 (RADOS object names are)")


def fuse_errors(fn: Callable) -> Callable:
    """Every handler: FUSEError passes, anything else is mapped (and logged) once here;
    each request is counted (latency, errno, its pool: radosfs/metrics.py)."""
    what = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self, *args: Any) -> Any:
        pool = self._pool_of(what, args)   # before: release forgets the handle
        started = time.perf_counter()
        err, nbytes = 0, 0
        try:
            result = await fn(self, *args)
            if what == "read":
                nbytes = len(result)
            elif what == "write":
                nbytes = result
            return result
        except FUSEError as exc:
            err = exc.errno
            raise
        except Exception as exc:  # noqa: BLE001 -- the one place errors become errnos
            err = to_errno(exc, f"{what}{self._describe(what, args)}")
            raise FUSEError(err) from None
        except BaseException:   # cancelled (the mount is going away): not an answer
            err = -1
            raise
        finally:
            if err >= 0:
                self.fs.requests.record(what, time.perf_counter() - started, err, pool,
                                        nbytes)
    return wrapper


class Handle:
    __slots__ = ("node", "file", "read_state", "writable", "flush_failed", "direct")

    def __init__(self, node: FileNode, file: CachedFile, writable: bool,
                 direct: bool = False) -> None:
        self.node = node
        self.file = file
        self.read_state = ReadState()
        self.writable = writable
        # Opened with O_DIRECT (the kernel passes the flag): what the cache does not hold
        # is read and written straight from and to the cluster.
        self.direct = direct
        self.flush_failed: int | None = None  # errno of the close()'s failed flush: release
        #                                       won't retry


class DirHandle:
    """A directory listing in progress: entries so far, more pulled as readdir asks."""

    def __init__(self, node: DirNode) -> None:
        self.node = node
        self.entries: list[tuple[bytes, Node, pyfuse3.EntryAttributes]] = []
        self.source = None
        self.done = False


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: MountContext, root: DirNode,
                 invalidate: Callable[[int, bool], None] = pyfuse3.invalidate_inode) -> None:
        """`invalidate(inode, attr_only)` tells the kernel its cache of an inode is stale
        (pyfuse3's, unless driven without FUSE)."""
        super().__init__()
        self.fs = fs
        self.root = root
        self._invalidate = invalidate
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._timed_out: dict[tuple[int, bytes], float] = {}

    # ---- helpers ---------------------------------------------------------------------

    def _describe(self, what: str, args: tuple) -> str:
        """The path(s) a failed request was about, for its log line."""
        parts = []
        for i, a in enumerate(args[:4]):
            if isinstance(a, bytes):
                if what == "write" or (what == "setxattr" and i == 2):
                    continue  # what users wrote never goes to the log
                # a name: escaped, so raw bytes never reach a log line
                parts.append(printable(a[:200].decode("utf-8", "backslashreplace")))
            elif isinstance(a, int) and not isinstance(a, bool):
                if i == 0 and what in FH_HANDLERS:  # a file handle, not an inode
                    h = self.handles.get(a) or self.dirs.get(a)
                    node = h.node if h is not None else None
                else:
                    node = self.fs.table.by_ino.get(a)
                if node is not None:
                    parts.append(node.describe())
        return (" " + " ".join(parts)) if parts else ""

    def _pool_of(self, what: str, args: tuple) -> str | None:
        """The pool a request is about (None: the root, the stats file, ...)."""
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool):
            return None
        if what in FH_HANDLERS:
            h = self.handles.get(args[0]) or self.dirs.get(args[0])
            node = h.node if h is not None else None
        else:
            node = self.fs.table.by_ino.get(args[0])
        return getattr(node, "pool", None)

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _node(self, ino: int) -> Node:
        return cast(Node, self.fs.table.node(ino))

    def _dir(self, ino: int) -> DirNode:
        node = self._node(ino)
        if not isinstance(node, DirNode):
            raise RadosFSError(errno.ENOTDIR, "not a directory")
        return node

    def _file(self, ino: int) -> FileNode:
        node = self._node(ino)
        if not isinstance(node, FileNode):
            raise RadosFSError(errno.EISDIR, "is a directory")
        return node

    def _owner_for_create(self, mode: int, ctx, default: int | None = None) -> Ownership:
        """What a new file (or directory: `default` = the mount's directory mode) must
        remember beyond the mount's defaults (cp -p, rsync -a, mkdir -m)."""
        opts = self.fs.options
        default = opts.file_mode() if default is None else default
        perm = mode & 0o7777 & ~(getattr(ctx, "umask", 0) or 0)
        return Ownership(perm if perm != default else None,
                         ctx.uid if ctx is not None and ctx.uid != opts.uid else None,
                         ctx.gid if ctx is not None and ctx.gid != opts.gid else None)

    # ---- attributes and names --------------------------------------------------------

    @fuse_errors
    async def getattr(self, inode: int, ctx=None) -> pyfuse3.EntryAttributes:
        return await self._node(inode).attributes()

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        key = (parent_inode, name)
        failed = self._timed_out.get(key)
        now = trio.current_time()
        if failed is not None and now - failed < LOOKUP_FAIL_FAST:
            raise RadosFSError(errno.ETIMEDOUT, f"a lookup of this name timed out "
                                                f"{now - failed:.1f}s ago")
        try:
            node = await self._dir(parent_inode).lookup(_name(name))
            attrs = await node.attributes()
        except Exception as exc:
            if errno_of(exc) == errno.ETIMEDOUT:
                if len(self._timed_out) > 1000:
                    self._timed_out = {k: t for k, t in self._timed_out.items()
                                       if now - t < LOOKUP_FAIL_FAST}
                self._timed_out[key] = trio.current_time()
            raise
        self._timed_out.pop(key, None)
        self.fs.table.seen(node)
        return attrs

    async def forget(self, inode_list) -> None:
        """The kernel dropped inodes: those it no longer knows at all leave the table
        (not the root, nor a node `pinned` by open or unwritten data), so the daemon's
        memory follows what the kernel holds, not every name it was ever shown."""
        table = self.fs.table
        for ino, nlookup in inode_list:
            node = table.forget(ino, nlookup)
            if node is not None and not cast(Node, node).pinned:
                table.remove(node)

    def _entry(self, node: Node, attrs: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
        """A reply that gives the kernel an inode: one lookup count more."""
        self.fs.table.seen(node)
        return attrs

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if (fields.update_mode or fields.update_uid or fields.update_gid
                or fields.update_size or fields.update_mtime or fields.update_atime):
            # As the VFS does on a read-only mount: refused even if nothing would change
            # (chmod to the mode a file under .snap already has).
            node.check_writable()
        current = await node.attributes()
        mode = attr.st_mode & 0o7777 if fields.update_mode else None
        uid = attr.st_uid if fields.update_uid and attr.st_uid not in (-1, 0xFFFFFFFF) else None
        gid = attr.st_gid if fields.update_gid and attr.st_gid not in (-1, 0xFFFFFFFF) else None
        changes = ((mode is not None and mode != current.st_mode & 0o7777)
                   or (uid is not None and uid != current.st_uid)
                   or (gid is not None and gid != current.st_gid))
        if changes:
            await node.set_ownership(node.owner.merged(mode, uid, gid))
        if fields.update_size:
            await node.truncate(attr.st_size)
        if fields.update_mtime or fields.update_atime:
            await node.touch(attr.st_mtime_ns if fields.update_mtime else None,
                             attr.st_atime_ns if fields.update_atime else None)
        return await node.attributes()

    @fuse_errors
    async def readlink(self, inode: int, ctx) -> bytes:
        return await self._node(inode).readlink()

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
                name, node, attrs = dh.entries[i]
                if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                    return
                self.fs.table.seen(node)  # readdirplus: the kernel now holds it
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
                dh.entries.append((name.encode("utf-8"), node, attrs))

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        dh = self.dirs.pop(fh, None)
        if dh is not None and dh.source is not None:
            await dh.source.aclose()

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        parent.check_writable()
        text = _name(name)
        check_component(text)
        node = await parent.mkdir(text, self._owner_for_create(
            mode, ctx, self.fs.options.dir_mode()))
        return self._entry(node, await node.attributes())

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        parent.check_writable()
        text = _name(name)
        check_component(text)
        node = await parent.symlink(text, target, self._owner_for_create(0o777, ctx))
        return self._entry(node, await node.attributes())

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx) -> pyfuse3.EntryAttributes:
        """Device nodes, FIFOs, sockets: EPERM (see docs/semantics.md); a regular file
        (mknod(2) with S_IFREG) is an ordinary create."""
        parent = self._dir(parent_inode)
        parent.check_writable()
        text = _name(name)
        check_component(text)
        if stat.S_ISREG(mode):
            node = await parent.create(text, self._owner_for_create(mode, ctx))
        else:
            node = await parent.mknod(text, mode)
        return self._entry(node, await node.attributes())

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx) -> pyfuse3.EntryAttributes:
        parent = self._dir(new_parent_inode)
        parent.check_writable()
        node = await parent.link(self._node(inode), _name(new_name))
        return self._entry(node, await node.attributes())

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx) -> None:
        parent = self._dir(parent_inode)
        parent.check_writable()
        await parent.rmdir(_name(name))

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx) -> None:
        parent = self._dir(parent_inode)
        parent.check_writable()
        await parent.unlink(_name(name))

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx) -> None:
        old_parent = self._dir(parent_inode_old)
        new_parent = self._dir(parent_inode_new)
        old_parent.check_writable()
        new_parent.check_writable()
        if old_parent.snapshot_names or new_parent.snapshot_names:
            raise RadosFSError(errno.EROFS, "snapshots cannot be renamed")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise RadosFSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        new = _name(name_new)
        check_component(new)
        await old_parent.rename(_name(name_old), new_parent, new, flags)

    # ---- files -----------------------------------------------------------------------

    def _handle(self, node: FileNode, f: CachedFile, writable: bool, keep: bool,
                flags: int = 0) -> pyfuse3.FileInfo:
        fh = self._fh()
        self.handles[fh] = Handle(node, f, writable, bool(flags & os.O_DIRECT))
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep and not node.direct_io,
                                direct_io=node.direct_io)

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx) -> pyfuse3.FileInfo:
        node = self._file(inode)
        writable = bool(flags & (os.O_WRONLY | os.O_RDWR))
        f, keep = await node.open(writable, bool(flags & os.O_TRUNC))
        if node.kernel_size is not None and node.kernel_size != f.size:
            # Changed elsewhere (close-to-open): the kernel's cached size is stale too.
            # attr_only never touches pages, so it cannot block on this very request.
            await trio.to_thread.run_sync(self._invalidate, inode, True)
        return self._handle(node, f, writable, keep, flags)

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._dir(parent_inode)
        parent.check_writable()
        text = _name(name)
        check_component(text)
        node = await parent.create(text, self._owner_for_create(mode, ctx))
        f, _ = await node.open(True, False)
        return self._handle(node, f, True, False, flags), self._entry(node, await node.attributes())

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        return await self.fs.cache.read(h.file, off, size, h.read_state, h.direct)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        if not h.writable:
            raise RadosFSError(errno.EBADF, "not open for writing")
        return await h.node.write(h.file, off, buf, h.direct)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        h = self.handles[fh]
        if h.file.dirty:
            try:
                await self.fs.cache.flush(h.file)
            except BaseException as exc:
                h.flush_failed = errno_of(exc) or errno.EIO
                raise
            h.flush_failed = None

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.cache.flush(self.handles[fh].file)

    @fuse_errors
    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        if h.file.dirty:
            try:
                if h.flush_failed is not None:
                    # close() got the error a moment ago: retrying now would only make
                    # the release (and an umount behind it) wait op_timeout once more.
                    raise RadosFSError(h.flush_failed, "the flush at close failed")
                await self.fs.cache.flush(h.file)
            except RadosFSError as exc:
                log.error("close of %s: %d dirty bytes could not be written (errno %d); "
                          "kept in the cache and retried at the next flush or umount",
                          h.node.describe(), h.file.dirty_bytes, exc.errno)
        await self.fs.cache.release(h.file)

    # ---- xattrs ----------------------------------------------------------------------

    def _xattr_name(self, name: bytes) -> str | None:
        text = name.decode("utf-8", "replace")
        return text[len(XATTR_USER):] if text.startswith(XATTR_USER) else None

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx) -> bytes:
        node = self._node(inode)
        key = self._xattr_name(name)
        if key is None:
            # ceph.*, security.capability (asked on every write: no round trip) ...
            try:
                return await node.get_ceph_xattr(name.decode("utf-8", "replace"))
            except RadosFSError as exc:
                if exc.errno == errno.ENODATA:
                    raise FUSEError(errno.ENODATA) from None  # not worth a log line
                raise
        return await node.get_xattr(key)

    @fuse_errors
    async def listxattr(self, inode: int, ctx) -> list[bytes]:
        names = await self._node(inode).list_xattrs()
        return [(XATTR_USER + n).encode() for n in names]

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx) -> None:
        node = self._node(inode)
        node.check_writable()
        key = self._xattr_name(name)
        if key is None:
            await node.set_ceph_xattr(name.decode("utf-8", "replace"), value)
            return
        if not key:
            raise RadosFSError(errno.ENOTSUP, "only user.* xattrs on files are stored")
        await node.set_xattr(key, value)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx) -> None:
        node = self._node(inode)
        node.check_writable()
        key = self._xattr_name(name)
        if key is None:
            await node.remove_ceph_xattr(name.decode("utf-8", "replace"))
            return
        await node.remove_xattr(key)

    # ---- the filesystem --------------------------------------------------------------

    @fuse_errors
    async def statfs(self, ctx) -> pyfuse3.StatvfsData:
        """`df`: the cluster's size and free space; a mount of one pool (`pools=P`) whose
        pool has a quota shows that quota instead (ceph-fuse's client_quota_df). pyfuse3
        gives no inode here, so `df MNT/POOL` answers as `df MNT` (docs/layout.md)."""
        st = await self.fs.conn.cluster_stats()
        total, free = st["kb"] * 1024, st["kb_avail"] * 1024
        files, ffree = st["num_objects"] + (1 << 30), 1 << 30
        if len(self.fs.options.pools) == 1:
            q = await pool_quota(self.fs.conn, self.fs.options.pools[0])
            if q.max_bytes:
                total, free = q.max_bytes, max(0, min(q.max_bytes - q.used_bytes, free))
            if q.max_objects:
                files, ffree = q.max_objects, max(0, q.max_objects - q.objects)
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = total // 4096
        s.f_bfree = s.f_bavail = free // 4096
        s.f_files = files
        s.f_ffree = s.f_favail = ffree
        s.f_namemax = 255
        return s
