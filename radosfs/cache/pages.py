"""The state the page cache keeps per page and per file (see pagecache.py for the rules)."""
from __future__ import annotations

from typing import Hashable

import trio

from .backend import Backend

PAGE_SIZE = 1 << 20


class Page:
    __slots__ = ("data", "valid", "dirty_lo", "dirty_hi", "pins", "loading",
                 "held_lo", "held_hi", "writing")

    def __init__(self) -> None:
        self.data: bytes | bytearray = bytearray()  # bytes while clean as read in
        self.valid = False
        self.dirty_lo = 0
        self.dirty_hi = 0
        self.pins = 0
        self.loading: trio.Event | None = None
        # Not valid: [held_lo, held_hi) of data is what was written through the mount,
        # dirty or written back (the cluster may not have it yet): a read-in keeps it.
        self.held_lo = 0
        self.held_hi = 0
        self.writing = 0  # write-backs of this page in flight (at most one at a time)

    @property
    def dirty(self) -> bool:
        return self.dirty_hi > self.dirty_lo


class CachedFile:
    """The cached state of one stored file, shared by all its open handles."""

    def __init__(self, backend: Backend, stored_size: int) -> None:
        self.backend = backend
        self.key = backend.key
        self.size = stored_size          # logical size, as the user sees it
        self.stored_size = stored_size   # size in the cluster, as far as we know
        self.pages: dict[int, Page] = {}
        self.dirty_pages: set[int] = set()
        self.in_transit = 0
        self.idle = trio.Event()
        self.idle.set()
        self.opens = 0
        self.error: int | None = None    # first write-back failure not yet reported
        # The errno of the last write-back of this file if it failed (cleared when one
        # succeeds): new writes are refused with it, and the log says it once.
        self.failed: int | None = None
        self.retried_at = float("-inf")  # trio clock: the last retry a refused write kicked
        self.version: Hashable = None
        # Counts truncations (at their start and end): a read-in that overlaps one may
        # hold bytes from before it, which must not reappear past the cut.
        self.resizes = 0
        self.dirty_since: float | None = None  # trio clock: when unwritten data appeared
        # Set while a rename or unlink moves the stored data: no write-back (or truncate)
        # starts until it is set again (writes still go into the pages).
        self.frozen: trio.Event | None = None

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_pages) or self.in_transit > 0

    @property
    def in_use(self) -> bool:
        """Open, or holding data not yet written back: the cached size is the truth."""
        return self.opens > 0 or self.dirty

    @property
    def dirty_bytes(self) -> int:
        return sum(self.pages[i].dirty_hi - self.pages[i].dirty_lo for i in self.dirty_pages
                   if i in self.pages)


class ReadState:
    """Per open handle: where the next sequential read would start, and the window."""
    __slots__ = ("next_offset", "window", "prefetched_to")

    def __init__(self) -> None:
        self.next_offset = 0
        self.window = 0
        self.prefetched_to = 0
