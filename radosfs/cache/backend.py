"""The small protocol the page cache talks to.

The cache knows nothing of RADOS: a plain object, a striped object set, an RBD image and a
read-only view at a snapshot all implement this, and one cache serves them all.
"""
from __future__ import annotations

from typing import Hashable, Protocol


class Backend(Protocol):
    """One file's storage. Errors are raised as exceptions carrying `.errno`."""

    #: identifies the stored thing across handles (two opens of one object share pages)
    key: Hashable
    #: True for snapshot views: writes are refused with EROFS before reaching here
    read_only: bool
    #: write-out granularity: dirty runs are cut at multiples of this (object boundaries)
    write_unit: int
    #: optional, False if absent: any write may go straight to `write` (O_DIRECT writes,
    #: `PageCache.write_direct`), skipping `plan_writeback` -- True only for a backend
    #: with no layout to choose as the file grows (an image)
    writes_in_place: bool

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        """Told the file's logical and stored size before write-back starts. False asks the
        cache to hold back *background* write-back for now (flush and back-pressure still
        write everything)."""

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes at [offset, offset+length); short (or empty) at end of file."""

    async def write(self, offset: int, data: bytes) -> None:
        """Store data at offset in place (extending the file if needed)."""

    async def truncate(self, size: int) -> None:
        """Grow (with zeros) or shrink to `size`."""

    async def flush(self) -> None:
        """Make acknowledged writes durable (a no-op where an ack already means that)."""

    async def version(self) -> tuple[int, Hashable]:
        """(size, token): the token changes when the stored data changes (keep_cache)."""
