"""RBD images as files: the directory of a pool whose applications include 'rbd'.

Such a pool is shown flat, one regular file per image (RBD's own objects -- rbd_directory,
rbd_header.*, rbd_data.*, ... -- never show). Reading and writing a file reads and writes the
image through librbd's asynchronous calls, under the same page cache as object files.

Pieces:

* `ImageBackend` -- the cache `Backend` for one image (at HEAD, or read-only at a snapshot).
  It opens its `rbd.Image` lazily in a worker thread and closes it again when idle (see
  `ImageBackend.close`); every binding call that may block runs through `Bridge.run`, and
  reads/writes/flushes go through `Bridge.aio`.
* `ImagePool(DirNode)` -- the pool's directory: list, lookup, create, unlink, rename.
* `ImageFile(FileNode)` -- one image: attributes, the shared backend, xattrs as image metadata.
* `is_rbd_pool`, `image_pool_node`, `close_all` -- helpers for the root and for umount.

Names and attributes come without opening images: lookup asks `rbd_directory` for the image
id (cls `rbd.dir_get_id`), and size/mtime come from the image header (cls `rbd.get_size`,
`rbd.get_modify_timestamp`), one round trip each, all images of a listing in parallel. These
are the same object-class calls librbd itself makes. Format-1 images (not creatable since
Jewel/Pacific) are not shown.

Traps handled here (see /work/shared/notes/ceph-api-facts.md section 6, plus what we measured):

* A librbd write past the end of the image is *silently clipped*: `aio_write` completes
  with 0 and the bytes past the end are dropped (the sync `write` raises
  IncompleteWriteError). So every write grows the image first.
* `aio_read` at or past the end fails with EINVAL (not a short read); across the end it is
  short. Reads are clipped to the size here.
* With `rbd_cache=false` (set by connection.py) librbd writes are zero-copy: librbd keeps a
  pointer into our `bytes` until the write completes, so a write is never abandoned on
  cancellation (shielded) and its buffer is held until the completion.
* `rbd.Image.__dealloc__` calls `rbd_close`, which blocks, and *hangs forever* once the
  Rados handle is shut down. Images are therefore always closed explicitly in a worker
  thread, and must all be closed before `Rados.shutdown()` (see `close_all`).
* `Image.metadata_set` accepts a non-UTF-8 value, after which `metadata_list` raises
  UnicodeDecodeError for the whole image, and an empty value, after which `metadata_list`
  pairs keys with the wrong values and drops keys. We refuse both (EINVAL) and read
  metadata with the cls calls instead (`image_metadata`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import struct
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Hashable

import pyfuse3
import rados
import rbd
import trio

from .bridge import Bridge, concurrently
from .errors import RadosFSError, errno_of
from .objects import MAX_IO, read_in_pieces
from .nodes import SNAPDIR, DirNode, FileNode, Node, check_component, valid_path_name

if TYPE_CHECKING:
    from .filesystem import FileSystem

log = logging.getLogger(__name__)

DEFAULT_OBJECT_SIZE = 4 << 20    # write_unit until the image is open (order 22)
IDLE_CLOSE = 5.0                 # seconds an image with no open handle stays open
STAT_BATCH = 256                 # images stat'ed concurrently per readdir batch
NEGATIVE_APP_TTL = 5.0           # seconds a "not an rbd pool" answer is trusted
CEPH_NOSNAP = 0xFFFFFFFFFFFFFFFE
RBD_DIRECTORY = "rbd_directory"
METADATA_PAGE = 64               # metadata entries per cls call
METADATA_OUT = 1 << 20           # output buffer for one page of metadata

_unique = itertools.count()


def header_oid(image_id: str) -> str:
    """The header object of a format-2 image."""
    return "rbd_header." + image_id


def _enc_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def _dec_str(b: bytes) -> str:
    (n,) = struct.unpack_from("<I", b, 0)
    return b[4:4 + n].decode()


def _epoch(t: Any) -> float | None:
    if isinstance(t, datetime):
        return t.timestamp()
    return None


# ---- per-mount state ----------------------------------------------------------------------

class HeaderProbe:
    """Reads a header object's version (RADOS' per-object version counter).

    `Ioctx.get_last_version()` is per-ioctx state set by the last synchronous op, so the
    probe has an ioctx of its own, used under a thread lock by one stat at a time.
    """

    def __init__(self, ioctx: rados.Ioctx) -> None:
        self.ioctx = ioctx
        self.lock = threading.Lock()

    def version(self, oid: str) -> int:
        """Blocking: call in a worker thread."""
        with self.lock:
            self.ioctx.stat(oid)
            return self.ioctx.get_last_version()

    def close(self) -> None:
        with self.lock:
            self.ioctx.close()


class PoolContext:
    """What the images of one pool share: the pool's ioctx and a header probe."""

    def __init__(self, pool: str, ioctx: rados.Ioctx, probe: HeaderProbe) -> None:
        self.pool = pool
        self.ioctx = ioctx
        self.probe = probe


class RbdState:
    """Image-pool state of one mount (kept on the FileSystem as `fs.rbd`)."""

    def __init__(self) -> None:
        self.apps: dict[str, tuple[bool, float]] = {}
        self.pools: dict[str, PoolContext] = {}
        self.pool_lock = trio.Lock()
        self.backends: dict[Hashable, ImageBackend] = {}


def rbd_state(fs: FileSystem) -> RbdState:
    st = getattr(fs, "rbd", None)
    if st is None:
        st = RbdState()
        fs.rbd = st  # type: ignore[attr-defined]
    return st


async def pool_context(fs: FileSystem, pool: str) -> PoolContext:
    st = rbd_state(fs)
    ctx = st.pools.get(pool)
    if ctx is None:
        async with st.pool_lock:
            ctx = st.pools.get(pool)
            if ctx is None:
                io = await fs.conn.ioctx(pool)
                probe_io = await fs.bridge.run(fs.conn.handle.open_ioctx, pool)
                ctx = st.pools[pool] = PoolContext(pool, io, HeaderProbe(probe_io))
    return ctx


async def is_rbd_pool(fs: FileSystem, pool: str) -> bool:
    """Whether the pool's application list includes 'rbd'.

    A yes is cached for the mount; a no only for NEGATIVE_APP_TTL seconds, so that
    `rbd pool init` on a pool the mount has already seen takes effect quickly.
    """
    st = rbd_state(fs)
    known = st.apps.get(pool)
    now = time.monotonic()
    if known is not None and (known[0] or now - known[1] < NEGATIVE_APP_TTL):
        return known[0]
    try:
        apps = await fs.conn.pool_applications(pool)
        if "rbd" not in apps:
            # The list comes from our copy of the osdmap, which can lag behind the
            # monitors: `ceph osd pool create` + `rbd pool init` are two epochs, and we may
            # hold the first. Make sure a "no" is not just stale before trusting it.
            await fs.bridge.run(fs.conn.handle.wait_for_latest_osdmap)
            apps = await fs.conn.pool_applications(pool)
    except Exception as exc:  # noqa: BLE001 -- e.g. the pool just went away
        if errno_of(exc) != errno.ENOENT:
            raise
        apps = []
    yes = "rbd" in apps
    st.apps[pool] = (yes, now)
    return yes


async def image_pool_node(fs: FileSystem, pool: str) -> ImagePool | None:
    """The ImagePool node for `pool` if it is an rbd pool, else None (RootNode's helper)."""
    if not await is_rbd_pool(fs, pool):
        return None
    return fs.table.get(ImagePool.key_for(pool), lambda: ImagePool(fs, pool))  # type: ignore


async def close_all(fs: FileSystem) -> None:
    """Close every image and probe ioctx this mount opened.

    Call at umount, after `cache.flush_all()` and before `Rados.shutdown()`: an `rbd.Image`
    still open at shutdown makes its (blocking) close hang forever, and holds its
    watch/exclusive lock on the cluster until the OSD times the watch out.
    """
    st = getattr(fs, "rbd", None)
    if st is None:
        return
    for backend in list(st.backends.values()):
        try:
            await backend.close()
        except Exception as exc:  # noqa: BLE001 -- close the others anyway
            log.error("closing image %s: %r", backend.key, exc)
    for ctx in list(st.pools.values()):
        await fs.bridge.run(ctx.probe.close)
    st.pools.clear()


# ---- cls calls (no image open needed) -----------------------------------------------------

async def _cls(bridge: Bridge, io: rados.Ioctx, oid: str, method: str, data: bytes = b"",
               length: int = 4096) -> bytes:
    (out,) = await bridge.aio(
        lambda cb: io.aio_execute(oid, "rbd", method, data, length, oncomplete=cb))
    return out or b""


async def image_id_of(bridge: Bridge, io: rados.Ioctx, name: str) -> str:
    """The id of the image called `name`; RadosFSError(ENOENT) if there is none."""
    out = await _cls(bridge, io, RBD_DIRECTORY, "dir_get_id", _enc_str(name))
    return _dec_str(out)


async def image_attrs(bridge: Bridge, io: rados.Ioctx, image_id: str
                      ) -> tuple[int, float | None]:
    """(size, mtime) of an image at HEAD from its header; ENOENT if it is gone.

    The mtime is librbd's modify timestamp, which librbd updates at most every
    `rbd_mtime_update_interval` (60 s) while the image is written; images created before
    Mimic have none and give their create timestamp; None if neither exists.
    """
    oid = header_oid(image_id)
    res: dict[str, Any] = {}

    async def size() -> None:
        out = await _cls(bridge, io, oid, "get_size", struct.pack("<Q", CEPH_NOSNAP))
        res["size"] = struct.unpack_from("<BQ", out, 0)[1]

    async def mtime() -> None:
        for method in ("get_modify_timestamp", "get_create_timestamp"):
            try:
                out = await _cls(bridge, io, oid, method)
            except RadosFSError as exc:
                if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                    continue
                raise
            sec, nsec = struct.unpack_from("<II", out, 0)
            if sec:
                res["mtime"] = sec + nsec / 1e9
                return

    async with concurrently() as n:
        n.start_soon(size)
        n.start_soon(mtime)
    return res["size"], res.get("mtime")


def _dec_map(b: bytes) -> dict[str, bytes]:
    """A Ceph-encoded map<string, bufferlist>."""
    (n,) = struct.unpack_from("<I", b, 0)
    pos = 4
    out: dict[str, bytes] = {}
    for _ in range(n):
        (klen,) = struct.unpack_from("<I", b, pos)
        key = b[pos + 4:pos + 4 + klen].decode("utf-8", "surrogateescape")
        pos += 4 + klen
        (vlen,) = struct.unpack_from("<I", b, pos)
        out[key] = b[pos + 4:pos + 4 + vlen]
        pos += 4 + vlen
    return out


async def image_metadata(bridge: Bridge, io: rados.Ioctx, image_id: str) -> dict[str, bytes]:
    """All image metadata (`rbd image-meta list`), read from the header (cls metadata_list).

    Not through `Image.metadata_list()`: the Pacific binding splits the packed values on
    NULs, so one empty value shifts every later key/value pair (keys go missing), and one
    non-UTF-8 value makes it raise for the whole image.
    """
    out: dict[str, bytes] = {}
    start = ""
    while True:
        raw = await _cls(bridge, io, header_oid(image_id), "metadata_list",
                         _enc_str(start) + struct.pack("<Q", METADATA_PAGE), METADATA_OUT)
        page = _dec_map(raw) if raw else {}
        out.update(page)
        if len(page) < METADATA_PAGE:
            return out
        start = max(page)


async def image_metadata_get(bridge: Bridge, io: rados.Ioctx, image_id: str,
                             key: str) -> bytes:
    """One metadata value; RadosFSError(ENODATA) if the key is not set."""
    try:
        raw = await _cls(bridge, io, header_oid(image_id), "metadata_get", _enc_str(key),
                         METADATA_OUT)
    except RadosFSError as exc:
        if exc.errno == errno.ENOENT:
            raise RadosFSError(errno.ENODATA, f"no image metadata {key}") from None
        raise
    (n,) = struct.unpack_from("<I", raw, 0)
    return raw[4:4 + n]


# ---- the backend --------------------------------------------------------------------------

class ImageBackend:
    """One RBD image as a page-cache backend (`radosfs.backend.Backend`).

    `snapshot=NAME` gives a read-only view at that snapshot (`read_only` True; writes raise
    EROFS). The `rbd.Image` is opened on first use, in a worker thread, and closed by
    `close()`. Closing is always safe: the next call opens the image again. Whoever owns the
    backend should close it when done: the ImageFile nodes here do that themselves -- when
    the mount's task nursery is available (`spawn`), an image with no open handle and no
    dirty data (`busy()` False) is closed after IDLE_CLOSE idle seconds, and at umount when
    that nursery is cancelled. `close_all(fs)` closes the rest. An open image keeps a watch on
    its header, so `rbd rm` by another client fails with EBUSY while it is open.

    Writes past the end grow the image first (serialized by a lock; never shrinks: growth
    uses `resize(allow_shrink=False)` and re-reads the size when another writer got further).
    """

    def __init__(self, bridge: Bridge, ioctx: rados.Ioctx, pool: str, image_id: str,
                 snapshot: str | None = None, *, probe: HeaderProbe | None = None,
                 spawn: Callable[[], trio.Nursery | None] | None = None,
                 busy: Callable[[], bool] | None = None, idle_close: float = IDLE_CLOSE,
                 name: str = "", snap_id: int | None = None) -> None:
        self.bridge = bridge
        self.ioctx = ioctx
        self.pool = pool
        self.image_id = image_id
        self.snapshot = snapshot
        self.name = name or image_id
        # A snapshot view is keyed by the snapshot's id too: one removed and made again
        # under the same name is other data, never served from the old one's pages.
        self.key: Hashable = ("rbd", pool, image_id, snapshot) + (
            (snap_id,) if snapshot is not None else ())
        self.expected_snap_id = snap_id
        self.read_only = snapshot is not None
        self._probe = probe
        self._spawn = spawn
        self._busy = busy
        self._idle_close = idle_close
        self._obj_size = DEFAULT_OBJECT_SIZE
        self._image: rbd.Image | None = None
        self._snap_id: int | None = None
        self._known_size: int | None = None
        self._size_hint = 0
        self._open_lock = trio.Lock()
        self._resize_lock = trio.Lock()
        self._closing = False
        self._inflight = 0
        self._drained: trio.Event | None = None
        self._last_use = 0.0
        self._reaper = False
        self.opens = 0   # how many times the image was opened (for tests and stats)

    @property
    def write_unit(self) -> int:
        """The image's object size: dirty runs are cut at object boundaries."""
        return self._obj_size

    # ---- opening and closing -----------------------------------------------------------

    def _open_blocking(self) -> tuple[rbd.Image, dict, int | None]:
        img = rbd.Image(self.ioctx, image_id=self.image_id, snapshot=self.snapshot,
                        read_only=self.read_only)
        try:
            st = img.stat()
            snap_id = None
            if self.snapshot is not None:
                snap_id = next((s["id"] for s in img.list_snaps()
                                if s["name"] == self.snapshot), None)
                if self.expected_snap_id is not None and snap_id != self.expected_snap_id:
                    raise RadosFSError(errno.ENOENT, f"snapshot {self.snapshot} of "
                                       f"{self.name} was removed (and made again)")
            return img, st, snap_id
        except BaseException:
            img.close()
            raise

    async def _acquire(self) -> rbd.Image:
        while True:
            img = self._image
            if img is not None and not self._closing:
                self._inflight += 1
                return img
            async with self._open_lock:
                if self._image is None:
                    img, st, snap_id = await self.bridge.run(self._open_blocking)
                    self._image = img
                    self._obj_size = int(st["obj_size"]) or DEFAULT_OBJECT_SIZE
                    self._known_size = int(st["size"])
                    self._snap_id = snap_id
                    self.opens += 1
                    self._last_use = trio.current_time()
                    self._start_reaper()

    def _release(self) -> None:
        self._inflight -= 1
        self._last_use = trio.current_time()
        if self._inflight == 0 and self._drained is not None:
            self._drained.set()

    @asynccontextmanager
    async def _using(self) -> AsyncIterator[rbd.Image]:
        img = await self._acquire()
        try:
            yield img
        finally:
            self._release()

    async def call(self, fn: Callable[[rbd.Image], Any]) -> Any:
        """Run a blocking binding call `fn(image)` in a worker thread."""
        async with self._using() as img:
            return await self.bridge.run(fn, img)

    async def _aio(self, submit: Callable[[rbd.Image, Callable], Any], nbytes: int) -> tuple:
        async with self._using() as img:
            return await self.bridge.aio(lambda cb: submit(img, cb), nbytes)

    @property
    def is_open(self) -> bool:
        return self._image is not None

    async def close(self) -> None:
        """Wait for calls in flight, then close the image (in a worker thread).

        Releases the exclusive lock and the header watch. The backend stays usable: the
        next call opens the image again.
        """
        async with self._open_lock:
            if self._image is None:
                return
            self._closing = True
            try:
                while self._inflight:
                    self._drained = trio.Event()
                    await self._drained.wait()
                img, self._image = self._image, None
                with trio.CancelScope(shield=True):
                    await self.bridge.run(img.close)
                log.debug("closed image %s/%s", self.pool, self.name)
            finally:
                self._drained = None
                self._closing = False

    def _start_reaper(self) -> None:
        if self._reaper or self._spawn is None or self._idle_close <= 0:
            return
        nursery = self._spawn()
        if nursery is None:
            return
        self._reaper = True
        nursery.start_soon(self._reap)

    async def _reap(self) -> None:
        """Close the image once idle; close it too when the mount's nursery is cancelled."""
        try:
            while self._image is not None:
                wait = self._last_use + self._idle_close - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                    continue
                if self._inflight or (self._busy is not None and self._busy()):
                    self._last_use = trio.current_time()
                    continue
                await self.close()
        finally:
            self._reaper = False
            if self._image is not None:
                with trio.CancelScope(shield=True):
                    await self.close()

    # ---- the Backend protocol ----------------------------------------------------------

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        # The file's size as the user sees it: a write past the end grows the image to
        # that at once, not write unit by write unit (one resize per cp, not per 4 MiB).
        self._size_hint = size
        return True  # images have no layout to choose: write behind at once

    async def size(self) -> int:
        size = await self.call(lambda img: img.size())
        self._known_size = size
        return size

    async def read(self, offset: int, length: int) -> bytes:
        return await read_in_pieces(self._read_once, offset, length)

    async def _read_once(self, offset: int, n: int) -> bytes:
        for _ in range(3):
            if self._known_size is not None and offset >= self._known_size:
                # librbd answers EINVAL, not a short read, at or past the end: re-check.
                if offset >= await self.size():
                    return b""
            try:
                (data,) = await self._aio(
                    lambda img, cb: img.aio_read(offset, n, cb), n)
                return data or b""
            except Exception as exc:  # noqa: BLE001
                if errno_of(exc) != errno.EINVAL and not isinstance(exc, rbd.InvalidArgument):
                    raise
                if offset >= await self.size():  # shrunk under us
                    return b""
        raise RadosFSError(errno.EIO, f"read of {self.pool}/{self.name} at {offset} kept "
                                      f"failing with EINVAL")

    async def write(self, offset: int, data: bytes) -> None:
        if self.read_only:
            raise RadosFSError(errno.EROFS, f"{self.pool}/{self.name}@{self.snapshot}")
        end = offset + len(data)
        if self._known_size is None or end > self._known_size:
            await self._grow(max(end, self._size_hint))
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            chunk = data if len(data) <= MAX_IO else bytes(view[pos:pos + MAX_IO])
            # librbd keeps a pointer into `chunk` until the write completes (zero-copy
            # without rbd_cache): never abandon the wait, and hold the buffer until then.
            with trio.CancelScope(shield=True):
                await self._aio(lambda img, cb, c=chunk, o=offset + pos: img.aio_write(c, o, cb),
                                len(chunk))
            pos += len(chunk)

    async def _grow(self, end: int) -> None:
        """Make the image at least `end` bytes long; never shrinks it."""
        async with self._resize_lock:
            if self._known_size is not None and end <= self._known_size:
                return

            def grow(img: rbd.Image) -> int:
                cur = img.size()
                if cur >= end:
                    return cur
                try:
                    img.resize(end, allow_shrink=False)
                except rbd.InvalidArgument:
                    # Another client grew it past `end` meanwhile (allow_shrink=False
                    # refuses to shrink it back); take its size.
                    cur = img.size()
                    if cur < end:
                        raise
                    return cur
                return end

            self._known_size = await self.call(grow)

    async def truncate(self, size: int) -> None:
        if self.read_only:
            raise RadosFSError(errno.EROFS, f"{self.pool}/{self.name}@{self.snapshot}")
        async with self._resize_lock:
            await self.call(lambda img: img.resize(size))
            self._known_size = size
            self._size_hint = size

    async def flush(self) -> None:
        if self.read_only:
            return
        await self._aio(lambda img, cb: img.aio_flush(cb), 0)

    async def version(self) -> tuple[int, Hashable]:
        """(size, token) for keep_cache / revalidation on open.

        The token is the RADOS version of the image's header object, which changes on every
        resize, snapshot create/remove, metadata change, modify-timestamp update and every
        change of exclusive-lock owner. Plain data writes do *not* touch the header, so this
        only catches another client's writes because, with the exclusive-lock feature (on
        by default), a writer must take the lock first:

        * if nobody holds the lock, or we do, the data cannot have changed without the
          header version changing first (our own writes re-read the token at flush);
        * if another client holds the lock it may be writing right now: the token is then
          unique (never equal), so every open re-reads the data;
        * an image without the exclusive-lock feature can be written by anyone without a
          trace in its header: the token is always unique (no caching across opens).

        It does not catch writes made by another client between our open and our close
        (the page cache only revalidates at open, close-to-open like NFS). A snapshot view
        never changes: its token is the snapshot id.
        """
        if self.snapshot is not None:
            size = await self.size()
            return size, ("snap", self._snap_id)
        probe = self._probe
        oid = header_oid(self.image_id)

        def look(img: rbd.Image) -> tuple[int, int | None]:
            # The header version first, then the lock: a lock taken after the version was
            # read changes the header again, so the next look sees it.
            hv = probe.version(oid) if probe is not None else None
            size = img.size()
            if hv is None or not img.features() & rbd.RBD_FEATURE_EXCLUSIVE_LOCK:
                return size, None
            if img.is_exclusive_lock_owner():
                return size, hv
            owners = list(img.lock_get_owners())
            return size, (None if owners else hv)

        size, hv = await self.call(look)
        self._known_size = size
        token = ("header", hv) if hv is not None else ("unknown", next(_unique))
        return size, token

    # ---- extras ------------------------------------------------------------------------

    async def stat(self) -> tuple[int, float | None]:
        """(size, mtime) through the open image (used for snapshot views)."""
        def look(img: rbd.Image) -> tuple[int, float | None]:
            size = img.size()
            if self._snap_id is not None:
                return size, _epoch(img.get_snap_timestamp(self._snap_id))
            return size, _epoch(img.modify_timestamp())
        size, mtime = await self.call(look)
        self._known_size = size
        return size, mtime


# ---- nodes --------------------------------------------------------------------------------

class ImageFile(FileNode):
    """One RBD image shown as a regular file (at HEAD, or read-only at a snapshot).

    * size = the image size; mtime = librbd's modify timestamp (updated by librbd at most
      every 60 s while written; the create timestamp for images that have none, else the
      mount time); for a snapshot view, the snapshot's timestamp.
    * xattrs `user.KEY` are the image metadata `KEY` (`rbd image-meta list`). New values
      must be non-empty UTF-8 (EINVAL otherwise: the Python binding's metadata_list breaks
      on anything else), but whatever other tools stored reads back as stored. librbd uses
      keys named `conf_*` as per-image configuration overrides; they show here as well.
    * utimens is accepted and ignored (as rbd-fuse does): clients cannot set librbd's
      modify timestamp, and failing it would break `touch`.
    """

    def __init__(self, fs: FileSystem, pool: str, name: str, image_id: str,
                 snapshot: str | None = None, snap_id: int | None = None) -> None:
        super().__init__(fs, ImageFile.key_for(pool, name, snapshot, snap_id))
        self.pool = pool
        self.name = name
        self.image_id = image_id
        self.snapshot = snapshot
        self.snap_id = snap_id
        self.read_only = snapshot is not None

    @staticmethod
    def key_for(pool: str, name: str, snapshot: str | None = None,
                snap_id: int | None = None) -> tuple:
        return ("image", pool, name) if snapshot is None \
            else ("image", pool, name, snapshot, snap_id)

    @property
    def backend_key(self) -> Hashable:
        # By image id: a rename does not move the cached pages or the open image.
        return ("rbd", self.pool, self.image_id, self.snapshot) + (
            (self.snap_id,) if self.snapshot is not None else ())

    def _busy(self) -> bool:
        f = self.fs.cache.get(self.backend_key)
        return f is not None and (f.opens > 0 or f.dirty)

    async def backend(self) -> ImageBackend:
        st = rbd_state(self.fs)
        b = st.backends.get(self.backend_key)
        if b is None:
            ctx = await pool_context(self.fs, self.pool)
            b = st.backends.get(self.backend_key)
            if b is None:
                b = st.backends[self.backend_key] = ImageBackend(
                    self.fs.bridge, ctx.ioctx, self.pool, self.image_id, self.snapshot,
                    probe=ctx.probe, spawn=lambda: self.fs.cache.nursery, busy=self._busy,
                    name=self.name, snap_id=self.snap_id)
        return b

    async def stored_attrs(self) -> tuple[int, float]:
        if self.snapshot is not None:
            size, mtime = await (await self.backend()).stat()
        else:
            ctx = await pool_context(self.fs, self.pool)
            size, mtime = await image_attrs(self.fs.bridge, ctx.ioctx, self.image_id)
        return size, mtime if mtime is not None else self.fs.mount_time

    async def attributes_from(self, size: int, mtime: float | None) -> pyfuse3.EntryAttributes:
        mtime = mtime if mtime is not None else self.fs.mount_time
        cached = self.fs.cache.get(self.backend_key)
        if cached is not None and (cached.dirty or cached.opens):
            return self.file_attrs(cached.size, self.mtime or mtime)
        return self.file_attrs(size, mtime)

    # ---- xattrs = image metadata -------------------------------------------------------

    async def _meta(self, fn: Callable[[rbd.Image], Any]) -> Any:
        try:
            return await (await self.backend()).call(fn)
        except KeyError:
            raise RadosFSError(errno.ENODATA, "no such image metadata") from None

    async def list_xattrs(self) -> list[str]:
        ctx = await pool_context(self.fs, self.pool)
        return sorted(await image_metadata(self.fs.bridge, ctx.ioctx, self.image_id))

    async def get_xattr(self, key: str) -> bytes:
        ctx = await pool_context(self.fs, self.pool)
        return await image_metadata_get(self.fs.bridge, ctx.ioctx, self.image_id, key)

    async def set_xattr(self, key: str, value: bytes) -> None:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RadosFSError(errno.EINVAL, "image metadata values must be UTF-8") from None
        if not text:
            # `rbd image-meta set` refuses empty values too, and the Python binding's
            # metadata_list() misreports every key after one.
            raise RadosFSError(errno.EINVAL, "image metadata values cannot be empty")
        await self._meta(lambda img: img.metadata_set(key, text))

    async def remove_xattr(self, key: str) -> None:
        await self._meta(lambda img: img.metadata_remove(key))

    async def set_mtime(self, mtime: float) -> None:
        """Accepted and ignored: librbd keeps the modify timestamp itself."""
        return None

    async def close_backend(self) -> None:
        b = rbd_state(self.fs).backends.get(self.backend_key)
        if b is not None:
            await b.close()

    async def remove(self) -> None:
        """Remove the image (drops cached data; closes our own open image first).

        ImageHasSnapshots -> EBUSY (unlink(2) has no ENOTEMPTY; remove them with
        `rbd snap purge`); ImageBusy (another client has it open) -> EBUSY.
        """
        if self.snapshot is not None:
            raise RadosFSError(errno.EROFS, "snapshot view")
        await self.fs.cache.forget(self.backend_key)
        st = rbd_state(self.fs)
        b = st.backends.pop(self.backend_key, None)
        if b is not None:
            await b.close()
        ctx = await pool_context(self.fs, self.pool)
        try:
            await self.fs.bridge.run(rbd.RBD().remove, ctx.ioctx, self.name)
        except rbd.ImageHasSnapshots:
            raise RadosFSError(errno.EBUSY, f"image {self.pool}/{self.name} has snapshots "
                                            f"(rbd snap purge first)") from None
        except rbd.ImageBusy:
            raise RadosFSError(errno.EBUSY, f"image {self.pool}/{self.name} is open by "
                                            f"another client (rbd status)") from None


class ImagePool(DirNode):
    """The directory of a pool whose applications include 'rbd': one file per image.

    Flat: mkdir -> EPERM, rmdir -> ENOTDIR for an image name (else ENOENT). create makes a
    0-byte image with librbd's default features (what `rbd create` uses); unlink removes it
    (see ImageFile.remove for the errnos); rename is `RBD.rename`, replacing an existing
    target image by removing it first (not atomic: a crash in between loses the target).
    Objects of the pool that are not images are never shown.
    """

    def __init__(self, fs: FileSystem, pool: str) -> None:
        super().__init__(fs, ImagePool.key_for(pool))
        self.pool = pool

    @staticmethod
    def key_for(pool: str) -> tuple:
        return ("pool", pool, "", "rbd")

    async def ctx(self) -> PoolContext:
        return await pool_context(self.fs, self.pool)

    def file_node(self, name: str, image_id: str) -> ImageFile:
        key = ImageFile.key_for(self.pool, name)
        node = self.fs.table.by_key.get(key)
        if isinstance(node, ImageFile) and node.image_id != image_id:
            # Removed and created again (or renamed over) by another client: a new file.
            self.fs.table.drop(key)
        return self.fs.table.get(key, lambda: ImageFile(self.fs, self.pool, name,
                                                        image_id))  # type: ignore[return-value]

    async def lookup(self, name: str) -> Node:
        check_component(name)
        if name == SNAPDIR:
            from .snapshots import ImageSnapRoot
            return self.fs.table.get(("snaproot", self.pool),
                                     lambda: ImageSnapRoot(self.fs, self.pool))
        ctx = await self.ctx()
        try:
            image_id = await image_id_of(self.fs.bridge, ctx.ioctx, name)
        except RadosFSError as exc:
            if exc.errno == errno.ENOENT:
                self.fs.table.drop(ImageFile.key_for(self.pool, name))
                raise RadosFSError(errno.ENOENT, f"no image {self.pool}/{name}") from None
            raise
        return self.file_node(name, image_id)

    async def entries(self):
        ctx = await self.ctx()
        images = await self.fs.bridge.run(lambda: list(rbd.RBD().list2(ctx.ioctx)))
        images = sorted((i for i in images if i.get("id") and valid_path_name(i["name"])
                         and "/" not in i["name"]), key=lambda i: i["name"])
        bridge = self.fs.bridge
        for start in range(0, len(images), STAT_BATCH):
            chunk = images[start:start + STAT_BATCH]
            out: list = [None] * len(chunk)

            async def one(i: int, name: str, image_id: str) -> None:
                try:
                    size, mtime = await image_attrs(bridge, ctx.ioctx, image_id)
                except RadosFSError as exc:
                    if exc.errno == errno.ENOENT:
                        return  # removed (or still being created) meanwhile
                    raise
                node = self.file_node(name, image_id)
                out[i] = (name, node, await node.attributes_from(size, mtime))

            async with concurrently() as n:
                for i, img in enumerate(chunk):
                    n.start_soon(one, i, img["name"], img["id"])
            batch = [x for x in out if x is not None]
            if batch:
                yield batch

    async def create(self, name: str, owner: Any = None) -> Node:
        """A new 0-byte image. `owner` (a mode/uid/gid override asked for by the creator)
        is ignored: images take mode and owner from the mount options."""
        check_component(name)
        ctx = await self.ctx()
        try:
            # size 0, default order and features: what `rbd create --size 0` makes.
            await self.fs.bridge.run(rbd.RBD().create, ctx.ioctx, name, 0)
        except rbd.ImageExists:
            pass  # raced with another creator: open what is there
        return await self.lookup(name)

    async def unlink(self, name: str) -> None:
        node = await self.lookup(name)
        await node.remove()  # type: ignore[attr-defined]
        self.fs.table.drop(node.key)

    async def rmdir(self, name: str) -> None:
        await self.lookup(name)
        raise RadosFSError(errno.ENOTDIR, f"{self.pool}/{name} is an image, not a directory")

    async def mkdir(self, name: str) -> Node:
        raise RadosFSError(errno.EPERM, "image pools are flat: no directories")

    async def rename(self, old: str, new: str, flags: int = 0) -> None:
        """Rename image `old` to `new` in this pool (what operations.rename should call).

        An existing `new` is removed first unless `flags` has RENAME_NOREPLACE (EEXIST);
        RENAME_EXCHANGE -> EINVAL. The inode of `old` becomes the file at `new`; open
        handles keep working (the image is open by id).
        """
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise RadosFSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        check_component(new)
        node = await self.lookup(old)
        if old == new:
            return
        target = await self.rename_target(new, flags)
        if target is not None:
            await target.remove()  # type: ignore[attr-defined]
            self.fs.table.drop(target.key)
        ctx = await self.ctx()
        try:
            await self.fs.bridge.run(rbd.RBD().rename, ctx.ioctx, old, new)
        except rbd.ImageExists:
            raise RadosFSError(errno.EEXIST, f"{self.pool}/{new} was created meanwhile") \
                from None
        assert isinstance(node, ImageFile)
        self.fs.table.drop(ImageFile.key_for(self.pool, new))
        self.fs.table.rekey(node, ImageFile.key_for(self.pool, new))
        node.name = new
        b = rbd_state(self.fs).backends.get(node.backend_key)
        if b is not None:
            b.name = new
