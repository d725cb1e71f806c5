"""`/.radosfs-stats`: the mount's counters as JSON, a read-only file like any other.

Its contents are taken when it is opened (one consistent snapshot per open) and served
through the page cache from a backend that holds them; the kernel never caches them.
"""
from __future__ import annotations

import errno
import itertools
import json
from typing import Callable, Hashable

import pyfuse3

from ..cache import PAGE_SIZE, CachedFile
from ..errors import RadosFSError
from ..store.keys import StoreKey
from .base import FileNode
from .context import MountContext
from .inodes import STATS, NodeKey

SHOWN_SIZE = 1 << 16   # what stat shows: the real length is known only at open
_opens = itertools.count()


class StatsBackend:
    """A `Backend` over one snapshot of the counters."""
    key = StoreKey(STATS, "", "", None)
    read_only = True
    write_unit = PAGE_SIZE

    def __init__(self, data: bytes) -> None:
        self.data = data

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        return True

    async def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    async def write(self, offset: int, data: bytes) -> None:
        raise RadosFSError(errno.EROFS, "the stats file is read-only")

    truncate = write  # type: ignore[assignment]

    async def flush(self) -> None:
        return None

    async def version(self) -> tuple[int, Hashable]:
        return len(self.data), next(_opens)


class StatsFile(FileNode):
    read_only = True
    direct_io = True

    def __init__(self, fs: MountContext, counters: Callable[[], dict]) -> None:
        super().__init__(fs, NodeKey(STATS))
        self._counters = counters

    @property
    def stored_key(self) -> StoreKey:
        return StatsBackend.key

    async def stored_backend(self) -> StatsBackend:
        text = json.dumps(self._counters(), indent=1, sort_keys=True) + "\n"
        return StatsBackend(text.encode())

    async def attributes(self) -> pyfuse3.EntryAttributes:
        a = self._attrs(0o100444, SHOWN_SIZE)
        a.attr_timeout = a.entry_timeout = 0
        return a

    async def open(self, writable: bool, truncate: bool) -> tuple[CachedFile, bool]:
        if writable:
            raise RadosFSError(errno.EACCES, "the stats file is read-only")
        return await super().open(False, False)
