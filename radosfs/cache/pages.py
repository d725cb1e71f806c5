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
        # Writes that go straight to the backend, bypassing the pages (O_DIRECT): a page
        # read in while one of its range was in flight may hold older bytes. `overwriting`
        # counts those in flight per page; `overwritten` is the generation in which the
        # last one of a page ended (pages not in it: `overwrite_floor` or earlier).
        self.overwriting: dict[int, int] = {}
        self.overwritten: dict[int, int] = {}
        self.overwrite_gen = 0
        self.overwrite_floor = 0
        self.dirty_since: float | None = None  # trio clock: when unwritten data appeared
        # Set while a rename or unlink moves the stored data: no write-back (or truncate)
        # starts until it is set again (writes still go into the pages).
        self.frozen: trio.Event | None = None

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_pages) or self.in_transit > 0

    def overwrite_started(self, idxs: range) -> None:
        for idx in idxs:
            self.overwriting[idx] = self.overwriting.get(idx, 0) + 1

    def overwrite_ended(self, idxs: range) -> None:
        self.overwrite_gen += 1
        if len(self.overwritten) > 4096:  # bounded: older read-ins are all refused now
            self.overwritten.clear()
            self.overwrite_floor = self.overwrite_gen
        for idx in idxs:
            n = self.overwriting.pop(idx) - 1
            if n:
                self.overwriting[idx] = n
            self.overwritten[idx] = self.overwrite_gen

    def overwritten_since(self, idx: int, gen: int) -> bool:
        """A direct write of page `idx` was in flight at some time after generation `gen`
        (a read-in of the page started then may hold older bytes)."""
        return idx in self.overwriting or self.overwritten.get(idx, self.overwrite_floor) > gen

    @property
    def in_use(self) -> bool:
        """Open, or holding data not yet written back: the cached size is the truth."""
        return self.opens > 0 or self.dirty

    @property
    def dirty_bytes(self) -> int:
        return sum(self.pages[i].dirty_hi - self.pages[i].dirty_lo for i in self.dirty_pages
                   if i in self.pages)


#: Reads in a row that did not start where the last one ended, after which a handle's small
#: reads count as random access (see ReadState.random).
RANDOM_AFTER = 2
#: Only reads up to this size count as random access; bigger ones fill pages as ever.
RANDOM_MAX = 256 << 10


class ReadState:
    """Per open handle: where the next sequential read would start, the read-ahead window,
    and how many reads in a row were seeks (the access pattern)."""
    __slots__ = ("next_offset", "window", "prefetched_to", "seeks")

    def __init__(self) -> None:
        self.next_offset = 0
        self.window = 0
        self.prefetched_to = 0
        self.seeks = 0

    def random(self, length: int) -> bool:
        """A small read of a handle whose last reads were seeks: filling a whole page for it
        would read up to PAGE_SIZE / length times the bytes asked for."""
        return self.seeks >= RANDOM_AFTER and length <= RANDOM_MAX
