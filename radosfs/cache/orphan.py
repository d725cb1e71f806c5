"""The storage of a file that was unlinked (or renamed over) while still open.

POSIX: an unlinked file lives until its last close. RADOS cannot keep an object without a
name, so the page cache detaches the open file from its stored object: what the object
held is copied here first (up to a limit), the object is removed, and from then on the
file's reads and write-backs are served from memory. Nothing it writes reaches RADOS; the
bytes are freed at the last close.
"""
from __future__ import annotations

import errno
import itertools
from typing import Hashable

from ..errors import RadosFSError

_ids = itertools.count(1)


class OrphanBackend:
    """An unlinked-but-open file's bytes, in memory (a `Backend`)."""

    read_only = False

    def __init__(self, data: bytearray | None, size: int, write_unit: int,
                 was: Hashable) -> None:
        #: None: the stored bytes were too many to keep; reads of them give ESTALE
        self.data = data
        self.size = len(data) if data is not None else size
        self.key: Hashable = ("orphan", next(_ids), was)
        self.write_unit = write_unit

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        return True

    async def read(self, offset: int, length: int) -> bytes:
        if self.data is None:
            raise RadosFSError(errno.ESTALE, f"{self.key[2]} was removed while open and was "
                                             "too big to keep in memory")
        return bytes(self.data[offset:offset + length])

    async def write(self, offset: int, data: bytes) -> None:
        self.size = max(self.size, offset + len(data))
        if self.data is None:
            return  # goes nowhere, as every write of an unlinked file
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset:offset + len(data)] = data

    async def truncate(self, size: int) -> None:
        self.size = size
        if self.data is None:
            return
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))

    async def flush(self) -> None:
        return None

    async def version(self) -> tuple[int, Hashable]:
        return self.size, self.key

    def close(self) -> None:
        self.data = bytearray() if self.data is not None else None
