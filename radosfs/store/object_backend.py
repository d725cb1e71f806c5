"""An object-pool file as a cache backend: one plain RADOS object, or -- once it grows past
`STRIPE_THRESHOLD` -- a striped set in the libradosstriper layout.

The switch happens inside the backend while the file is in use, so the page cache and the
node above never see it. Plain I/O that is already under way finishes before the data is
moved, and I/O that arrives meanwhile waits and then goes to the striped set.

Another client may change the layout too (append past the threshold, `rados --striper rm`
then `rados put`): when the object is not where the backend thinks (ENOENT), it looks for
the other layout and follows it (`relocate`); a lookup that saw the layout tells it
directly (`adopt`). So close-to-open holds whatever the layout.
"""
from __future__ import annotations

import errno
import time
from typing import Hashable

import rados
import trio

from ..client.bridge import Bridge
from ..client.omap_header import OmapHeaders
from ..errors import RadosFSError, printable, refused_in_place
from .keys import StoreKey
from .rados_ops import (
    MAX_IO, read_object, stat_object, truncate_object, write_object, write_stamped)
from .striper import STRIPE_THRESHOLD, Layout, StripedData, convert_to_striped, read_head


# How soon after our last write `version` may answer from it (the flush at close asks at
# once; anything later asks the cluster).
FRESH_WRITE = 0.05
# How long after the open that took it a whole small object read by the lookup may answer
# the first read of it (see `offer_content`).
CONTENT_FRESH = 1.0


class ObjectBackend:
    """A file of an object pool (at HEAD, or at a pool snapshot when `snap` is set)."""

    def __init__(self, bridge: Bridge, ioctx: rados.Ioctx, pool: str, name: str,
                 snap: str | None = None, striped: StripedData | None = None,
                 headers: OmapHeaders | None = None) -> None:
        self.bridge = bridge
        self.ioctx = ioctx
        self.headers = headers  # to carry the omap header into the striped layout
        self.name = name
        # The namespace is the ioctx's: the key cannot disagree with where the data is.
        self.key = StoreKey.object(pool, name, snap, ioctx.get_namespace())
        self.read_only = snap is not None
        self.striped = striped
        self._plain_ops = 0
        self._drained = trio.Event()
        self._convert_lock = trio.Lock()
        self._converting = False
        self._size_hint = 0
        #: (size, mtime) the plain object has, as our own last stat, create or write left
        #: it (None: not known); `_wrote` = when a write of ours last changed it (see
        #: `version`)
        self._known: tuple[int, float] | None = None
        self._wrote: float | None = None
        #: the whole plain object as the lookup just before this open read it, with the
        #: monotonic time of that open (see `offer_content`)
        self._content: tuple[bytes, float] | None = None
        #: counts our own changes (writes, truncates, metadata, layout): what a lookup
        #: read before a change no longer describes the file
        self.changes = 0

    @property
    def write_unit(self) -> int:
        # The stripe unit either way, so runs cut while the file was plain still map to
        # one piece each after it turns striped.
        return self.striped.layout.stripe_unit if self.striped else Layout().stripe_unit

    @property
    def head_oid(self) -> str:
        """The object that carries mtime and xattrs (piece 0 of a striped set)."""
        return self.striped.head if self.striped else self.name

    # ---- plain-object I/O that a conversion must wait for ----------------------------

    async def _plain(self, fn, *args):
        while self._converting:
            await self._convert_lock.acquire()
            self._convert_lock.release()
        if self.striped is not None:
            return None, False
        self._plain_ops += 1
        try:
            return await fn(self.bridge, self.ioctx, self.name, *args), True
        finally:
            self._plain_ops -= 1
            if self._plain_ops == 0:
                self._drained.set()

    async def _to_striped(self) -> None:
        async with self._convert_lock:
            if self.striped is not None:
                return
            self._converting = True
            try:
                while self._plain_ops:
                    self._drained = trio.Event()
                    await self._drained.wait()
                size, _ = await stat_object(self.bridge, self.ioctx, self.name)
                self.striped = await convert_to_striped(self.bridge, self.ioctx, self.name,
                                                        size, Layout(), self.headers)
            finally:
                self._converting = False

    # ---- the layout, as another client may have changed it ---------------------------

    @property
    def busy(self) -> bool:
        """Our own I/O or conversion is under way: the layout is ours to decide."""
        return self._converting or self._plain_ops > 0 or self._convert_lock.locked()

    def adopt(self, striped: StripedData | None) -> None:
        """A lookup or listing just found the file plain (None) or striped: follow it,
        unless our own I/O is under way (then what we see is ours, and newer)."""
        if self.busy:
            return
        self._unknown()
        if striped is None:
            self.striped = None
        elif self.striped is None or self.striped.layout != striped.layout:
            self.striped = striped

    async def relocate(self) -> bool:
        """The file is not where we thought (ENOENT): look for it in the other layout.
        True if found there (the backend now uses it)."""
        self._unknown()
        async with self._convert_lock:
            if self.striped is None:
                head = await read_head(self.bridge, self.ioctx, self.name)
                if head is None:
                    return False
                self.striped = StripedData(self.bridge, self.ioctx, self.name, *head)
                return True
            try:
                await stat_object(self.bridge, self.ioctx, self.name)
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                return False
            self.striped = None
            return True

    # ---- what our own operations tell us of the stored version ------------------------

    def revalidate(self, created: tuple[int, float] | None = None) -> None:
        """A new open: the next `version` asks the cluster (close-to-open), unless we just
        created the object ourselves or the lookup right before the open stat'ed it
        (`created` = its (size, mtime))."""
        self._wrote = None
        self._known = created
        self._content = None

    def offer_content(self, data: bytes) -> None:
        """The whole plain object, read by the lookup whose stat this open's version came
        from: the first read of the object answers from it instead of asking again (one
        round trip less for a small file's `cat`). Used once, within CONTENT_FRESH of the
        open, and dropped by any write, truncate or layout change of ours."""
        self._content = (data, time.monotonic())

    def _take_content(self, offset: int, length: int) -> bytes | None:
        content, self._content = self._content, None
        if content is None or self.striped is not None or self.busy \
                or time.monotonic() - content[1] >= CONTENT_FRESH:
            return None
        return content[0][offset:offset + length]

    def forget_version(self) -> None:
        """Our own knowledge of the stored version no longer holds (a metadata write)."""
        self._unknown()

    def _unknown(self) -> None:
        self._known = self._wrote = None
        self._content = None
        self.changes += 1

    # ---- the Backend protocol --------------------------------------------------------

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        """A new file still below the threshold is not written behind: if it grows past
        it, it goes to the striped layout directly instead of being written plain and then
        copied (a `cp` of a big file would otherwise write its first 64 MiB twice)."""
        self._size_hint = max(size, self._size_hint) if self.striped is None else size
        return not (self.striped is None and stored_size == 0 and size <= STRIPE_THRESHOLD)

    async def stat(self) -> tuple[int, float]:
        try:
            return await self._stat()
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT or not await self.relocate():
                raise
        return await self._stat()

    async def _stat(self) -> tuple[int, float]:
        if self.striped is not None:
            return await self.striped.stat()
        res, done = await self._plain(stat_object)
        return res if done else await self.striped.stat()  # type: ignore[union-attr]

    async def read(self, offset: int, length: int) -> bytes:
        if self._content is not None:
            data = self._take_content(offset, length)
            if data is not None:
                return data
        try:
            return await self._read(offset, length)
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT or self.striped is not None \
                    or not await self.relocate():
                raise
        return await self._read(offset, length)

    async def _read(self, offset: int, length: int) -> bytes:
        if self.striped is None:
            res, done = await self._plain(read_object, offset, length)
            if done:
                return res
        return await self.striped.read(offset, length)  # type: ignore[union-attr]

    async def write(self, offset: int, data: bytes) -> None:
        self._content = None
        self.changes += 1
        try:
            await self._write(offset, data)
        except Exception as exc:
            explained = refused_in_place(exc, f"write to {self.key.pool}/{printable(self.name)}")
            if explained is exc:
                raise
            raise explained from exc

    async def _write(self, offset: int, data: bytes) -> None:
        if self.read_only:
            raise RadosFSError(errno.EROFS, "snapshot")
        if self.striped is None and max(offset + len(data), self._size_hint) > STRIPE_THRESHOLD:
            await self._to_striped()
        if self.striped is None:
            if len(data) > MAX_IO or self._plain_ops:
                # Split, or beside another write of ours: which mtime lands last is not
                # ours to know.
                self._unknown()
                _, done = await self._plain(write_object, offset, data)
            else:
                try:
                    stamp, done = await self._plain(write_stamped, offset, data)
                except BaseException:
                    self._unknown()
                    raise
                if done and self._known is not None and not self._plain_ops:
                    self._known = (max(self._known[0], offset + len(data)), float(stamp))
                    self._wrote = time.monotonic()
                else:
                    self._unknown()
            if done:
                return
        self._unknown()
        await self.striped.write(offset, data)  # type: ignore[union-attr]

    async def truncate(self, size: int) -> None:
        try:
            await self._truncate(size)
        except Exception as exc:
            explained = refused_in_place(exc, f"truncate of {self.key.pool}/{printable(self.name)}")
            if explained is exc:
                raise
            raise explained from exc

    async def _truncate(self, size: int) -> None:
        self._unknown()
        if self.striped is None and size > STRIPE_THRESHOLD:
            await self._to_striped()
        self._size_hint = size
        if self.striped is None:
            _, done = await self._plain(truncate_object, size)
            if done:
                return
        await self.striped.truncate(size)  # type: ignore[union-attr]

    async def flush(self) -> None:
        # A librados write is acknowledged only once it is durable on the OSDs; a striped
        # file's head still needs the new mtime its version is read from.
        if self.striped is not None:
            await self.striped.stamp_head()

    async def version(self) -> tuple[int, Hashable]:
        """(size, token). Right after writes of ours (the flush at close) it comes from
        what they stored -- the size they left and the mtime they stamped -- instead of a
        stat: what a stat would answer unless another client wrote meanwhile, which it
        could equally have done just after that stat. Used once, within FRESH_WRITE of the
        last write; every open asks the cluster (`revalidate`)."""
        known, wrote = self._known, self._wrote
        self._wrote = None
        if (known is not None and wrote is not None and self.striped is None
                and not self.busy and time.monotonic() - wrote < FRESH_WRITE):
            return known[0], (known[1], known[0], False)
        size, mtime = await self.stat()
        self._known = (size, mtime) if self.striped is None and not self.busy else None
        return size, (mtime, size, self.striped is not None)

    async def remove(self) -> None:
        self._unknown()
        if self.striped is not None:
            await self.striped.remove()
        else:
            await self.bridge.aio(lambda cb: self.ioctx.aio_remove(self.name, cb))
