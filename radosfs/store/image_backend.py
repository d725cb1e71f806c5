"""One RBD image as a page-cache backend, through librbd's asynchronous calls.

Traps handled here (see /work/shared/notes/ceph-api-facts.md section 6, plus what we measured):

* A librbd write past the end of the image is *silently clipped*: `aio_write` completes
  with 0 and the bytes past the end are dropped (the sync `write` raises
  IncompleteWriteError). So every write grows the image first.
* `aio_read` at or past the end fails with EINVAL (not a short read); across the end it is
  short. Reads are clipped to the size here.
* librbd clips every I/O to *its handle's* idea of the size, and that idea can be stale: a
  resize made while another client holds the exclusive lock is proxied to that owner, and
  the handle that asked only refreshes its header lazily -- until something refreshes it,
  each write starting past the old size fails with EINVAL, for ever (found by the model
  test, a second handle of the image in the same mount holding the lock; any other
  librbd client writing the image does the same). `size()` refreshes a handle first, so every
  resize here is followed by `size()` in the same call, and a write answered EINVAL
  refreshes, grows the image if it shrank under us (another client), and is sent again.
* With `rbd_cache=false` (set by connection.py) librbd writes are zero-copy: librbd keeps a
  pointer into our `bytes` until the write completes, so a write is never abandoned on
  cancellation (shielded) and its buffer is held until the completion.
* `rbd.Image.__dealloc__` calls `rbd_close`, which blocks, and *hangs forever* once the
  Rados handle is shut down. Images are therefore always closed explicitly in a worker
  thread, and must all be closed before `Rados.shutdown()` (see `ImagePools.close_all`).
* `Image.metadata_set` accepts a non-UTF-8 value, after which `metadata_list` raises
  UnicodeDecodeError for the whole image, and an empty value, after which `metadata_list`
  pairs keys with the wrong values and drops keys. We refuse both (EINVAL) and read
  metadata with the cls calls instead (`image_metadata`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import threading
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Hashable

import rados
import rbd
import trio

from ..client.bridge import Bridge, read_buffer
from ..errors import RadosFSError, errno_of
from .keys import StoreKey
from .rados_ops import MAX_IO, read_in_pieces
from .rbd_cls import header_oid

log = logging.getLogger(__name__)

DEFAULT_OBJECT_SIZE = 4 << 20    # write_unit until the image is open (order 22)
IDLE_CLOSE = 5.0                 # seconds an image with no open handle stays open

_unique = itertools.count()


def _epoch(t: Any) -> float | None:
    if isinstance(t, datetime):
        return t.timestamp()
    return None


def _is_einval(exc: BaseException) -> bool:
    return errno_of(exc) == errno.EINVAL or isinstance(exc, rbd.InvalidArgument)


def _refreshed_size(img: rbd.Image) -> int:
    """The size right after this handle resized the image (blocking). A resize proxied to
    another lock owner leaves the handle's header stale until refreshed; `size()`
    refreshes it, so the handle's next I/O is clipped to the new size, not the old one."""
    return img.size()


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



class ImageBackend:
    """One RBD image as a page-cache backend (`radosfs.cache.Backend`).

    `snapshot=NAME` gives a read-only view at that snapshot (`read_only` True; writes raise
    EROFS). The `rbd.Image` is opened on first use, in a worker thread, and closed by
    `close()`. Closing is always safe: the next call opens the image again. Whoever owns the
    backend should close it when done: `ImagePools` (image_pools.py) does -- when the
    mount's task nursery is available (`spawn`), an image with no open handle and no dirty
    data (`busy()` False) is closed after IDLE_CLOSE idle seconds, and at umount when that
    nursery is cancelled; `ImagePools.close_all` closes the rest. An open image keeps a watch on
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
        # (The RBD namespace is the ioctx's: the key cannot disagree with the image's.)
        self.key = StoreKey.image(pool, image_id, snapshot, snap_id, ioctx.get_namespace())
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

    #: O_DIRECT writes may go straight here (an image has no layout to plan as it grows)
    writes_in_place = True

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

    async def _aio(self, submit: Callable[[rbd.Image, Callable], Any], nbytes: int,
                   with_length: bool = False) -> tuple:
        # What `_using` does, without an async generator per request (random 4 KiB I/O
        # makes this the hottest path of the daemon).
        img = await self._acquire()
        try:
            return await self.bridge.aio(lambda cb: submit(img, cb), nbytes,
                                         with_length=with_length)
        finally:
            self._release()

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
                rv, data = await self._aio(
                    lambda img, cb: img.aio_read(offset, n, cb), n, with_length=True)
                return read_buffer(rv, data)
            except Exception as exc:  # noqa: BLE001
                if not _is_einval(exc):
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
            await self._write_chunk(offset + pos, chunk)
            pos += len(chunk)

    async def _write_chunk(self, offset: int, chunk: bytes) -> None:
        """One aio_write; answered EINVAL (the handle's size was stale, see the module
        docstring), it refreshes the size, grows the image past the chunk if needed and
        sends it once more."""
        for retry in (False, True):
            try:
                # librbd keeps a pointer into `chunk` until the write completes (zero-copy
                # without rbd_cache): never abandon the wait, and hold the buffer until then.
                with trio.CancelScope(shield=True):
                    await self._aio(lambda img, cb: img.aio_write(chunk, offset, cb),
                                    len(chunk))
                return
            except Exception as exc:  # noqa: BLE001
                if retry or not _is_einval(exc):
                    raise
            end = offset + len(chunk)
            if end > await self.size():
                await self._grow(max(end, self._size_hint))

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
                return _refreshed_size(img)

            self._known_size = await self.call(grow)

    async def truncate(self, size: int) -> None:
        if self.read_only:
            raise RadosFSError(errno.EROFS, f"{self.pool}/{self.name}@{self.snapshot}")

        def resize(img: rbd.Image) -> int:
            img.resize(size)
            return _refreshed_size(img)

        async with self._resize_lock:
            self._known_size = await self.call(resize)
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
