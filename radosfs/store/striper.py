"""Files of any size, in the libradosstriper layout.

RADOS refuses objects past `osd_max_object_size` (128 MiB). A file that grows past
`STRIPE_THRESHOLD` is stored the way libradosstriper stores it, so `rados --striper get`
reads what the mount wrote and `rados --striper put` files show up as one file:

* pieces named `<name>.%016x` (piece 0, 1, ...);
* on piece 0 the layout and size as ASCII decimal xattrs: `striper.layout.stripe_unit`,
  `striper.layout.stripe_count`, `striper.layout.object_size`, `striper.size`;
* a missing or short piece reads as zeros; reads stop at `striper.size`.

radosfs does not take libradosstriper's `striper.lock` (a cls lock): do not write one
striped file through the mount and with `rados --striper` at the same time.
"""
from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass

import rados
import trio

from ..client.bridge import Bridge, concurrently
from ..client.omap_header import OmapHeaders
from ..errors import RadosFSError, errno_of
from .copy import copy_header, read_omap, write_meta
from .rados_ops import (
    list_names, operate, operate_aio, read_object, stamp_mtime, stat_object, truncate_object,
    write_object)

log = logging.getLogger(__name__)

STRIPE_THRESHOLD = 64 << 20
# Truncate/remove: up to this many candidate pieces are tried one by one; past it, the
# pool listing is used when the pool has fewer than LIST_ADVANTAGE objects per candidate.
DIRECT_PIECES = 1024
LIST_ADVANTAGE = 20
PIECE_RE = re.compile(r"^(.+)\.([0-9a-f]{16})$")
XATTR_SU = "striper.layout.stripe_unit"
XATTR_SC = "striper.layout.stripe_count"
XATTR_OS = "striper.layout.object_size"
XATTR_SIZE = "striper.size"
# The largest file radosfs makes or shows (64 PiB): far below what st_size (2^63-1) and
# the piece names hold; writes and truncates past it get EFBIG.
MAX_FILE_SIZE = 1 << 56
INTERNAL_XATTRS = (XATTR_SU, XATTR_SC, XATTR_OS, XATTR_SIZE, "lock.striper.lock")


def piece_name(name: str, objectno: int) -> str:
    return f"{name}.{objectno:016x}"


def split_piece(oid: str) -> tuple[str, int] | None:
    """('name', n) for a piece name `name.%016x`, else None."""
    m = PIECE_RE.match(oid)
    return (m.group(1), int(m.group(2), 16)) if m else None


@dataclass(frozen=True)
class Layout:
    stripe_unit: int = 4 << 20
    stripe_count: int = 1
    object_size: int = 4 << 20

    def __post_init__(self) -> None:
        su, sc, os_ = self.stripe_unit, self.stripe_count, self.object_size
        if su <= 0 or sc <= 0 or os_ <= 0 or os_ % su:
            raise RadosFSError(errno.EINVAL, f"bad striper layout su={su} sc={sc} os={os_}")

    @property
    def units_per_object(self) -> int:
        return self.object_size // self.stripe_unit

    def extents(self, offset: int, length: int) -> list[tuple[int, int, int, int]]:
        """Map a file range to (objectno, object offset, length, file offset) pieces."""
        su, sc = self.stripe_unit, self.stripe_count
        out = []
        end = offset + length
        pos = offset
        while pos < end:
            blockno, in_block = divmod(pos, su)
            stripeno, stripepos = divmod(blockno, sc)
            objectsetno, unit_in_object = divmod(stripeno, self.units_per_object)
            objectno = objectsetno * sc + stripepos
            n = min(end - pos, su - in_block)
            obj_off = unit_in_object * su + in_block
            if out and out[-1][0] == objectno and out[-1][1] + out[-1][2] == obj_off:
                o, oo, ol, fo = out[-1]
                out[-1] = (o, oo, ol + n, fo)
            else:
                out.append((objectno, obj_off, n, pos))
            pos += n
        return out

    def object_count(self, size: int) -> int:
        """How many pieces a file of `size` bytes spans (highest objectno + 1)."""
        if size <= 0:
            return 1
        return max(e[0] for e in self.extents(size - 1, 1)) + 1

    def object_length(self, objectno: int, size: int) -> int:
        """Length of piece `objectno` in a file of `size` bytes (0 if none of it)."""
        su, sc = self.stripe_unit, self.stripe_count
        objectsetno, stripepos = divmod(objectno, sc)
        set_start = objectsetno * self.object_size * sc
        length = 0
        for u in range(self.units_per_object):
            file_off = set_start + (u * sc + stripepos) * su
            if file_off >= size:
                break
            length = u * su + min(su, size - file_off)
        return length

    def xattrs(self) -> dict[str, bytes]:
        return {XATTR_SU: str(self.stripe_unit).encode(),
                XATTR_SC: str(self.stripe_count).encode(),
                XATTR_OS: str(self.object_size).encode()}


def parse_layout(xattrs: dict[str, bytes], name: str = "?") -> tuple[Layout, int] | None:
    """(layout, size) from piece 0's xattrs, or None if it is not a striper head.

    Another client may have put anything there: a size past MAX_FILE_SIZE (or negative)
    is clamped, with a log line, so that the file still lists, reads and can be removed.
    """
    try:
        layout = Layout(int(xattrs[XATTR_SU]), int(xattrs[XATTR_SC]), int(xattrs[XATTR_OS]))
        size = int(xattrs[XATTR_SIZE])
    except (KeyError, ValueError):
        return None
    except RadosFSError:
        return None
    if not 0 <= size <= MAX_FILE_SIZE:
        log.warning("striped file %s: %s %s is out of range; shown as %d bytes",
                    ascii(name), XATTR_SIZE, ascii(xattrs[XATTR_SIZE][:40]),
                    max(0, min(size, MAX_FILE_SIZE)))
        size = max(0, min(size, MAX_FILE_SIZE))
    return layout, size


async def read_head(bridge: Bridge, io: rados.Ioctx, name: str) -> tuple[Layout, int] | None:
    """The layout and size of striped file `name`, or None if there is none."""
    def get() -> dict[str, bytes] | None:
        try:
            return dict(io.get_xattrs(piece_name(name, 0)))
        except rados.ObjectNotFound:
            return None
    xattrs = await bridge.run(get)
    return parse_layout(xattrs, name) if xattrs is not None else None


class StripedData:
    """Data I/O on a striped set; the size is kept in piece 0's `striper.size`."""

    def __init__(self, bridge: Bridge, io: rados.Ioctx, name: str, layout: Layout,
                 size: int) -> None:
        self.bridge = bridge
        self.io = io
        self.name = name
        self.layout = layout
        self.stored_size = size
        self._wanted = size
        self._size_lock = trio.Lock()
        # Data written to pieces past the head since the head was last changed: its mtime
        # (the file's version, what other mounts revalidate by) does not show it yet.
        self._unstamped = False

    @property
    def head(self) -> str:
        return piece_name(self.name, 0)

    @classmethod
    async def create(cls, bridge: Bridge, io: rados.Ioctx, name: str, layout: Layout,
                     extra_xattrs: dict[str, bytes] | None = None) -> StripedData:
        attrs = dict(extra_xattrs or {}, **layout.xattrs(), **{XATTR_SIZE: b"0"})

        def build(op: rados.WriteOp) -> None:
            op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            for k, v in attrs.items():
                op.set_xattr(k, v)

        await bridge.run(operate, io, piece_name(name, 0), build)
        return cls(bridge, io, name, layout, 0)

    async def size(self) -> int:
        head = await read_head(self.bridge, self.io, self.name)
        if head is None:
            raise RadosFSError(errno.ENOENT, f"striped file {self.name} has no piece 0")
        self.stored_size = head[1]
        return head[1]

    async def stat(self) -> tuple[int, float]:
        size = await self.size()
        _, mtime = await stat_object(self.bridge, self.io, self.head)
        return size, mtime

    async def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.stored_size - offset))
        if length == 0:
            return b""
        extents = self.layout.extents(offset, length)
        parts: list[bytes] = [b""] * len(extents)

        async def one(i: int, objectno: int, obj_off: int, n: int) -> None:
            try:
                data = await read_object(self.bridge, self.io, piece_name(self.name, objectno),
                                         obj_off, n)
            except RadosFSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                data = b""  # a missing piece reads as zeros
            # A short piece (sparse file) reads as zeros up to the extent's end.
            parts[i] = data if len(data) == n else data + bytes(n - len(data))

        if len(extents) == 1:  # the usual case: one piece, no copy
            await one(0, *extents[0][:3])
            return parts[0]
        async with concurrently() as nursery:
            for i, ext in enumerate(extents):
                nursery.start_soon(one, i, *ext[:3])
        return b"".join(parts)

    async def write(self, offset: int, data: bytes) -> None:
        extents = self.layout.extents(offset, len(data))
        if len(extents) == 1:  # the cache cuts runs at stripe units: no copy
            await write_object(self.bridge, self.io, piece_name(self.name, extents[0][0]),
                               extents[0][1], data)
        else:
            view = memoryview(data)

            async def one(objectno: int, obj_off: int, n: int, file_off: int) -> None:
                at = file_off - offset
                await write_object(self.bridge, self.io, piece_name(self.name, objectno),
                                   obj_off, bytes(view[at:at + n]))

            async with concurrently() as nursery:
                for ext in extents:
                    nursery.start_soon(one, *ext)
        stored = await self.set_size(offset + len(data), grow_only=True)
        if not stored and all(ext[0] != 0 for ext in extents):
            self._unstamped = True

    async def stamp_head(self) -> None:
        """Give the head the mtime of now if pieces past it were written since it last
        changed (called by the flush at fsync/close). The head's (size, mtime) is the file's
        version: without this, a same-size write into piece 1 or later left it as it was,
        and another mount that had cached the file kept serving the old bytes after our
        close (the seed-9 model run); `stat` showed the old mtime too."""
        if self._unstamped:
            self._unstamped = False
            try:
                await operate_aio(self.bridge, self.io, self.head, stamp_mtime)
            except BaseException:
                self._unstamped = True
                raise

    async def set_size(self, size: int, grow_only: bool = False) -> bool:
        """Store `striper.size` (True) unless a growth is no growth (False); updates are
        serialized so a smaller one never lands last (the setxattr stamps the head's mtime).

        Growing writes that queue up behind one update are answered by the next: it
        stores the largest size asked for so far (one setxattr, not one per write).
        """
        if grow_only:
            self._wanted = max(self._wanted, size)
        async with self._size_lock:
            if grow_only:
                if size <= self.stored_size:
                    return False
                size = max(size, self._wanted)
            else:
                self._wanted = size  # a truncate: earlier growth no longer applies
            await self.bridge.aio(lambda cb: self.io.aio_setxattr(
                self.head, XATTR_SIZE, str(size).encode(), cb))
            self.stored_size = size
            self._unstamped = False
            return True

    async def truncate(self, size: int) -> None:
        """Cut the file to `size`: pieces wholly past it go, the ones across it are cut.

        Work is proportional to the pieces that exist, not to the logical size (see
        `existing_pieces`): a sparse 10 TiB file is cut in a few calls."""
        old = max(self.stored_size, await self.size())
        if size < old:
            lay = self.layout
            set_bytes = lay.object_size * lay.stripe_count
            first = (size // set_bytes) * lay.stripe_count  # pieces before are untouched
            gone, cut = [], []
            for objectno in await self.existing_pieces(first, lay.object_count(old)):
                keep = lay.object_length(objectno, size)
                if keep == 0 and objectno > 0:
                    gone.append(objectno)
                elif keep < lay.object_length(objectno, old):
                    cut.append((objectno, keep))
            # Cut first: a pool that refuses truncate (EC without overwrites: EOPNOTSUPP)
            # then fails before anything changed, instead of after the pieces went.
            for objectno, keep in cut:
                try:
                    await truncate_object(self.bridge, self.io, piece_name(self.name, objectno),
                                          keep)
                except rados.ObjectNotFound:
                    pass
            await self._remove_pieces(gone)
        await self.set_size(size)

    async def existing_pieces(self, first: int, end: int) -> list[int]:
        """The piece numbers in [first, end) that may exist, highest first.

        A few candidates are returned as they are (a remove of a missing one costs one
        ENOENT). Past DIRECT_PIECES, whichever is cheaper: every candidate, or the pool
        listing filtered to this file's pieces (a sparse file of terabytes has millions of
        candidates and a few pieces; listing costs far less per object than a remove).
        """
        n = end - first
        if n <= DIRECT_PIECES:
            return list(range(end - 1, first - 1, -1))
        try:
            objects = int((await self.bridge.run(self.io.get_stats))["num_objects"])
        except Exception:  # noqa: BLE001 -- no stats (e.g. no monitor): guess
            objects = None
        if objects is not None and n <= objects // LIST_ADVANTAGE:
            return list(range(end - 1, first - 1, -1))
        found = []
        async for chunk in list_names(self.bridge, self.io):
            for oid in chunk:
                piece = split_piece(oid)
                if piece is not None and piece[0] == self.name and first <= piece[1] < end:
                    found.append(piece[1])
        return sorted(found, reverse=True)

    async def _remove_pieces(self, objectnos: list[int]) -> None:
        """Remove pieces concurrently (in batches); missing ones are fine."""
        io = self.io
        oids = [piece_name(self.name, n) for n in objectnos]
        results = await self.bridge.aio_many([(lambda cb, o=o: io.aio_remove(o, cb))
                                              for o in oids])
        for res in results:
            if isinstance(res, BaseException) and errno_of(res) != errno.ENOENT:
                raise res

    async def _remove_piece(self, oid: str) -> None:
        try:
            await self.bridge.aio(lambda cb: self.io.aio_remove(oid, cb))
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    async def remove(self) -> None:
        """Remove every piece that exists, piece 0 last (as libradosstriper does)."""
        size = max(self.stored_size, await self.size())
        await self._remove_pieces([n for n in await self.existing_pieces(
            1, self.layout.object_count(size)) if n > 0])
        await self._remove_piece(self.head)


async def convert_to_striped(bridge: Bridge, io: rados.Ioctx, name: str, size: int,
                             layout: Layout = Layout(),
                             headers: OmapHeaders | None = None) -> StripedData:
    """Move a plain object into the striper layout (the plain object is removed); its
    xattrs, omap keys and (with `headers`) omap header go to piece 0."""
    def user_xattrs() -> dict[str, bytes]:
        try:
            return dict(io.get_xattrs(name))
        except rados.ObjectNotFound:
            return {}
    xattrs = await bridge.run(user_xattrs)
    striped = await StripedData.create(bridge, io, name, layout, xattrs)
    # The omap keys and header go to piece 0 with the xattrs (see store/copy.py).
    def move_omap() -> None:
        try:
            omap = read_omap(io, name)
        except rados.ObjectNotFound:
            return
        write_meta(io, piece_name(name, 0), {}, omap)
        if headers is not None:
            copy_header(headers, io, name, piece_name(name, 0))
    await bridge.run(move_omap)
    pos = 0
    step = layout.object_size
    while pos < size:
        chunk = await read_object(bridge, io, name, pos, min(step, size - pos))
        if not chunk:
            break
        await striped.write(pos, chunk)
        pos += len(chunk)
    await striped.set_size(size)
    try:
        await bridge.aio(lambda cb: io.aio_remove(name, cb))
    except RadosFSError as exc:
        if errno_of(exc) != errno.ENOENT:
            raise
    return striped
