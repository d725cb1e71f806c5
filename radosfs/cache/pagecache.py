"""One page cache for the whole mount, over the small `Backend` protocol.

State is explicit (S3QL's block cache is the model):

* a `Page` is a PAGE_SIZE-aligned piece of one file. It is *valid* when `data` holds the
  page's full stored content (up to the file's size), and *dirty* over [dirty_lo, dirty_hi)
  when those bytes were written through the mount and not yet acknowledged by the cluster.
  A page that is not valid only holds its dirty bytes; it is read in (and the dirty bytes
  laid over it) when someone reads it.
* a page being written out is *pinned*: it cannot be evicted until the write is answered.
  Its dirty range is cleared when the write starts; if the write fails it is marked dirty
  again, so written data never silently leaves the cache.
* clean, unpinned pages sit in one LRU for the mount; eviction takes from its head.

Invariants (no `await` between the lines that keep them):
* `dirty_bytes` is the sum of the dirty ranges; `total_bytes` the sum of `len(page.data)`.
* a dirty or pinned page is never in the LRU.

Write-back (writeback.py) happens on flush (fsync, close), at umount, in the background as
soon as a file has a full write unit of dirty data, and when dirty data passes
`dirty_limit` -- then writers wait (back-pressure).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Hashable

import trio

from .backend import Backend
from .orphan import OrphanBackend
from .pages import PAGE_SIZE, CachedFile, Page, ReadState
from .writeback import DIRTY_EXPIRE, WriteBack  # noqa: F401 (DIRTY_EXPIRE re-exported)

log = logging.getLogger(__name__)

READAHEAD_START = 1 << 20
READAHEAD_MAX = 32 << 20


class PageCache(WriteBack):
    def __init__(self, budget: int = 512 << 20, dirty_limit: int | None = None) -> None:
        self.budget = max(budget, 8 * PAGE_SIZE)
        self.dirty_limit = dirty_limit or max(4 * PAGE_SIZE, min(self.budget // 2, 256 << 20))
        self.files: dict[Hashable, CachedFile] = {}
        self.lru: OrderedDict[tuple[Hashable, int], None] = OrderedDict()
        self.total_bytes = 0
        self.dirty_bytes = 0
        # Bytes copied out of dirty pages and not yet acknowledged. Bounded, so that a fast
        # writer cannot pile up write-back copies faster than the cluster takes them.
        self.transit_bytes = 0
        self.max_transit = min(64 << 20, max(8 << 20, self.budget // 4))
        # Woken whenever write-back makes progress (writers and flushers wait here).
        self.progress = trio.lowlevel.ParkingLot()
        self.nursery: trio.Nursery | None = None
        self.stats = {"hits": 0, "misses": 0, "bytes_read": 0, "bytes_written": 0,
                      "writes": 0, "reads": 0, "prefetched_pages": 0, "evicted_pages": 0,
                      "writeback_errors": 0, "direct_reads": 0, "direct_writes": 0}

    # ---- files ------------------------------------------------------------------------

    async def open(self, backend: Backend, known: tuple[int, Hashable] | None = None
                   ) -> tuple[CachedFile, bool]:
        """Get the cached file for a backend; returns (file, kernel cache still good).

        `known` is the backend's version when the caller just learnt it (a create).
        """
        f = self.files.get(backend.key)
        if f is not None and f.dirty:
            f.opens += 1
            return f, True
        version = known or await backend.version()
        f = self.files.get(backend.key)
        if f is None:
            f = CachedFile(backend, version[0])
            f.version = version
            self.files[backend.key] = f
            f.opens += 1
            return f, False
        f.opens += 1
        if f.dirty:
            return f, True
        f.backend = backend
        if version != f.version:
            # Changed in the cluster since we cached it: drop our pages and the kernel's.
            self._drop_pages(f, keep_dirty=False)
            f.size = f.stored_size = version[0]
            f.version = version
            return f, False
        return f, True

    def get(self, key: Hashable) -> CachedFile | None:
        return self.files.get(key)

    async def release(self, f: CachedFile) -> None:
        """Last step of close(): the file was flushed already; keep its clean pages."""
        f.opens -= 1
        if f.opens <= 0 and isinstance(f.backend, OrphanBackend):
            # The last close of an unlinked file: it is gone now.
            while f.in_transit:
                await f.idle.wait()
            if f.opens <= 0:
                self._drop_pages(f, keep_dirty=False)
                if self.files.get(f.key) is f:
                    del self.files[f.key]
                f.backend.close()
            return
        if f.opens <= 0 and not f.pages and not f.dirty:
            self.files.pop(f.key, None)

    # ---- a file's stored data moves (rename) or goes (unlink) while it is cached -------

    async def freeze(self, f: CachedFile) -> None:
        """Hold back every write-back and truncate of `f` (writes still go into its pages);
        returns once none is in flight, so its backend can be copied and replaced. One
        freeze at a time; end it with `thaw`."""
        while f.frozen is not None:
            await f.frozen.wait()
        f.frozen = trio.Event()
        try:
            while f.in_transit:
                await f.idle.wait()
        except BaseException:
            self.thaw(f)
            raise

    def thaw(self, f: CachedFile) -> None:
        event, f.frozen = f.frozen, None
        if event is not None:
            event.set()
        self.progress.unpark_all()
        if f.error is None:
            self._start_writeback(f, full_only=True)

    def _rekey(self, f: CachedFile, key: Hashable) -> None:
        """File `f` under another key (no await: the LRU entries follow at once)."""
        if self.files.get(f.key) is f:
            del self.files[f.key]
        for idx in f.pages:
            if (f.key, idx) in self.lru:
                del self.lru[(f.key, idx)]
                self.lru[(key, idx)] = None
        f.key = key
        self.files[key] = f

    def move(self, f: CachedFile, backend: Backend) -> None:
        """A rename: the (frozen) file's stored data now is `backend`'s, which holds what
        the old one held; the cached file follows it, with its pages and dirty data, so
        the descriptors open on it read and write the file at its new name. Whatever was
        cached for the new name (the file renamed over) is dropped."""
        other = self.files.get(backend.key)
        if other is not None and other is not f:
            self._drop_pages(other, keep_dirty=False)
            del self.files[backend.key]
        self._rekey(f, backend.key)
        f.backend = backend

    async def detach(self, f: CachedFile, keep_limit: int | None = None) -> None:
        """The (open) file's stored data is about to be removed: copy what it holds into
        memory (if at most `keep_limit` bytes, half the cache budget by default) and serve
        the file from there until its last close. Writes through its descriptors stay in
        this mount; none reaches the removed object (nor a new file of the same name)."""
        limit = self.budget // 2 if keep_limit is None else keep_limit
        await self.freeze(f)
        try:
            stored = f.stored_size
            data: bytearray | None = None
            if stored <= limit:
                data = bytearray()
                try:
                    while len(data) < stored:
                        chunk = await f.backend.read(len(data),
                                                     min(stored - len(data), 8 << 20))
                        if not chunk:
                            break
                        data += chunk
                except Exception as exc:  # noqa: BLE001 -- kept: what the pages hold
                    log.warning("unlink of open %s: its data could not be kept (%s); "
                                "reads of what is not cached will fail", f.key, exc)
                    data = None
            else:
                log.info("unlink of open %s: %d bytes, more than %d kept in memory; reads "
                         "of what is not cached will fail (ESTALE)", f.key, stored, limit)
            orphan = OrphanBackend(data, stored, f.backend.write_unit, f.key)
            self._rekey(f, orphan.key)
            f.backend = orphan
            f.version = await orphan.version()
        finally:
            self.thaw(f)

    async def forget(self, key: Hashable) -> None:
        """The stored file is going away (unlink): drop everything, wait for writes."""
        f = self.files.pop(key, None)
        if f is None:
            return
        self._drop_pages(f, keep_dirty=False)
        await f.idle.wait()

    def _drop_pages(self, f: CachedFile, keep_dirty: bool, from_index: int = 0) -> None:
        for idx in [i for i in f.pages if i >= from_index]:
            page = f.pages[idx]
            if keep_dirty and (page.dirty or page.pins):
                continue
            if page.dirty:
                self.dirty_bytes -= page.dirty_hi - page.dirty_lo
                f.dirty_pages.discard(idx)
            self.total_bytes -= len(page.data)
            self.lru.pop((f.key, idx), None)
            del f.pages[idx]

    # ---- reading ----------------------------------------------------------------------

    async def read(self, f: CachedFile, offset: int, length: int,
                   state: ReadState | None = None, direct: bool = False) -> bytes:
        """Bytes at [offset, offset+length) as the mount sees them (short at the end).

        `direct` (an O_DIRECT handle), or a handle whose reads are random (`state`) on a
        file larger than half the cache (whose pages would not stay cached anyway), reads
        what no page holds straight from the backend, filling no page: a 4 KiB random
        read then costs 4 KiB of the cluster, not a whole page."""
        self.stats["reads"] += 1
        end = min(offset + length, f.size)
        if offset >= end:
            return b""
        if state is not None:
            self._readahead(f, offset, end, state)
            direct = direct or (f.size > self.budget // 2 and state.random(end - offset))
        if direct:
            data = await self._read_around(f, offset, end)
            if data is not None:
                return data
            end = min(offset + length, f.size)  # it may have been truncated meanwhile
            if offset >= end:
                return b""
        out = []
        pos = offset
        while pos < end:
            idx, start = divmod(pos, PAGE_SIZE)
            page = await self._loaded(f, idx)
            n = min(end - pos, PAGE_SIZE - start)
            data = page.data
            if start == 0 and n == len(data) and isinstance(data, bytes):
                chunk = data  # a whole clean page, as the cluster gave it: no copy
            else:
                with memoryview(data) as mv:  # one copy, not two
                    chunk = bytes(mv[start:start + n])
            if len(chunk) < n:  # a hole below the logical size reads as zeros
                chunk += bytes(n - len(chunk))
            out.append(chunk)
            pos += n
        return out[0] if len(out) == 1 else b"".join(out)

    def _cached_any(self, f: CachedFile, offset: int, end: int) -> bool:
        """Some page of [offset, end) is in the cache (held, dirty, read or written)."""
        return any(idx in f.pages for idx in range(offset // PAGE_SIZE,
                                                   (end - 1) // PAGE_SIZE + 1))

    async def _read_around(self, f: CachedFile, offset: int, end: int) -> bytes | None:
        """[offset, end) straight from the backend when no page of it is cached; None when
        one is (it may hold bytes the cluster has not got yet: read through the pages), or
        when the file was resized or written around the cache meanwhile (read again)."""
        if self._cached_any(f, offset, end):
            return None
        resizes = f.resizes
        stored_end = min(end, f.stored_size)
        data = await f.backend.read(offset, stored_end - offset) if stored_end > offset \
            else b""
        if f.resizes != resizes or resizes % 2:
            return None
        self.stats["direct_reads"] += 1
        self.stats["bytes_read"] += len(data)
        end = min(end, f.size)
        if len(data) > end - offset:
            data = bytes(memoryview(data)[:max(0, end - offset)])
        elif len(data) < end - offset:  # a hole below the logical size reads as zeros
            data += bytes(end - offset - len(data))
        return data

    async def _loaded(self, f: CachedFile, idx: int) -> Page:
        """The page with its full content, reading it in if needed."""
        while True:
            page = f.pages.get(idx)
            if page is not None and page.valid:
                self.stats["hits"] += 1
                if (f.key, idx) in self.lru:
                    self.lru.move_to_end((f.key, idx))
                return page
            if page is not None and page.loading is not None:
                await page.loading.wait()
                continue
            self.stats["misses"] += 1
            page = await self._load(f, idx)
            if page.valid:
                # Even if it was evicted at once (cache full of dirty pages): the caller
                # uses it before the next await.
                return page

    async def _load(self, f: CachedFile, idx: int) -> Page:
        page = f.pages.get(idx)
        if page is None:
            page = f.pages[idx] = Page()
        if page.valid or page.loading is not None:
            return page
        page.loading = trio.Event()
        await self._fill(f, idx, page)
        return page

    async def _fill(self, f: CachedFile, idx: int, page: Page) -> None:
        """Read a page whose `loading` event is set up; wake its waiters when done."""
        event = page.loading
        assert event is not None
        page.pins += 1
        start = idx * PAGE_SIZE
        resizes, gen = f.resizes, f.overwrite_gen
        try:
            want = min(PAGE_SIZE, f.stored_size - start)
            data = await f.backend.read(start, want) if want > 0 else b""
            self.stats["bytes_read"] += len(data)
        finally:
            page.pins -= 1
            page.loading = None
            event.set()
        if f.pages.get(idx) is not page:
            return  # dropped (truncate, unlink) while we were reading
        if f.resizes != resizes or f.overwritten_since(idx, gen):
            # Truncated, or written around the cache, while we read: the bytes may be
            # stale. Stay not valid (readers read again); a page holding nothing
            # unwritten goes.
            if not page.dirty and not page.pins:
                self.total_bytes -= len(page.data)
                del f.pages[idx]
            return
        # Lay the bytes written meanwhile (or before) over what the cluster had.
        limit = max(0, min(PAGE_SIZE, f.size - start))
        base: bytes | bytearray
        if len(data) == limit and page.held_hi <= page.held_lo:
            base = data  # kept as the immutable bytes librados gave (copied on write)
        else:
            base = bytearray(data) if len(data) <= limit \
                else bytearray(memoryview(data)[:limit])
            if len(base) < limit:
                base.extend(bytes(limit - len(base)))
            if page.held_hi > page.held_lo:
                base[page.held_lo:page.held_hi] = page.data[page.held_lo:page.held_hi]
        self.total_bytes += len(base) - len(page.data)
        page.data = base
        page.valid = True
        page.held_lo = page.held_hi = 0
        if not page.dirty and not page.pins:
            self.lru[(f.key, idx)] = None
        self._evict()

    def _readahead(self, f: CachedFile, offset: int, end: int, st: ReadState) -> None:
        """Grow a prefetch window while reads are sequential; drop it on a seek."""
        if offset == st.next_offset and offset > 0:
            st.window = min(READAHEAD_MAX, max(READAHEAD_START, st.window * 2))
            st.seeks = 0
        elif offset != st.next_offset:
            st.window = 0
            st.prefetched_to = 0
            st.seeks += 1
        st.next_offset = end
        if not st.window or self.nursery is None:
            return
        # Refill when less than half the window is ahead of the reader.
        if st.prefetched_to - end > st.window // 2:
            return
        first = max(end, st.prefetched_to)
        last = min(f.size, end + st.window)
        budget_room = self.budget // 4
        for idx in range(first // PAGE_SIZE, (last + PAGE_SIZE - 1) // PAGE_SIZE):
            if idx in f.pages:
                continue
            if idx * PAGE_SIZE >= f.stored_size or budget_room <= 0:
                break
            budget_room -= PAGE_SIZE
            page = f.pages[idx] = Page()
            page.loading = trio.Event()
            self.stats["prefetched_pages"] += 1
            self.nursery.start_soon(self._prefetch, f, idx, page)
        st.prefetched_to = max(st.prefetched_to, last)

    async def _prefetch(self, f: CachedFile, idx: int, page: Page) -> None:
        try:
            await self._fill(f, idx, page)
        except Exception as exc:  # the reader will retry and see the error itself
            log.debug("prefetch of %s page %d failed: %r", f.key, idx, exc)
            page = f.pages.get(idx)
            if page is not None and not page.valid and not page.dirty and not page.pins:
                self.total_bytes -= len(page.data)
                del f.pages[idx]

    # ---- writing ----------------------------------------------------------------------

    async def write(self, f: CachedFile, offset: int, data: bytes) -> int:
        """Store a write in the cache. A write that raises has stored nothing: errors are
        decided before the first byte goes into a page."""
        self.stats["writes"] += 1
        await self._admit(f)
        if f.dirty_since is None:
            f.dirty_since = trio.current_time()
        pos = 0
        n_total = len(data)
        view = memoryview(data)
        while pos < n_total:
            idx, start = divmod(offset + pos, PAGE_SIZE)
            n = min(n_total - pos, PAGE_SIZE - start)
            page = f.pages.get(idx)
            if n == PAGE_SIZE and (page is None or (not page.pins and not page.dirty
                                                    and page.loading is None)):
                # A whole page (cp, dd: 1 MiB writes): keep the bytes as they came.
                self._replace(f, idx, page, data if n == n_total else bytes(view[pos:pos + n]))
                pos += n
                continue
            if page is None:
                page = f.pages[idx] = Page()
                if idx * PAGE_SIZE >= f.stored_size:
                    page.valid = True  # nothing stored there yet: zeros
            if not page.valid and page.held_hi > page.held_lo and (
                    start > page.held_hi or start + n < page.held_lo):
                # A second, separate range in a page we never read: read it first so one
                # range per page is enough.
                page = await self._loaded(f, idx)
                if f.pages.get(idx) is not page:
                    continue  # evicted or dropped meanwhile: look again
            self._put(f, idx, page, start, view[pos:pos + n])
            pos += n
        f.size = max(f.size, offset + n_total)
        self.progress.unpark_all()
        self._evict()
        self._start_writeback(f, full_only=True)
        if self.dirty_bytes > self.dirty_limit:
            await self._throttle_writer(f)
        return n_total

    async def write_direct(self, f: CachedFile, offset: int, data: bytes) -> int:
        """An O_DIRECT write: straight to the backend, answered when the cluster has it,
        when the backend writes in place (`writes_in_place`) and no page of the range is
        cached; otherwise (a cached page may hold newer bytes, or write-back is held or
        failing) an ordinary write into the pages.

        While it is in flight the file counts as dirty (flush, truncate, rename and an
        open wait for it, as for a write-back), and a page of its range read in meanwhile
        is not kept (`overwritten_since`). A failure is the writer's: nothing is kept to
        retry."""
        end = offset + len(data)
        if (not getattr(f.backend, "writes_in_place", False) or not data
                or f.frozen is not None or f.failed is not None or f.resizes % 2
                or self._cached_any(f, offset, end)):
            return await self.write(f, offset, data)
        self.stats["writes"] += 1
        self.stats["direct_writes"] += 1
        idxs = range(offset // PAGE_SIZE, (end - 1) // PAGE_SIZE + 1)
        f.overwrite_started(idxs)
        f.in_transit += 1
        f.idle = trio.Event() if f.idle.is_set() else f.idle
        try:
            await f.backend.write(offset, data)
        finally:
            f.overwrite_ended(idxs)
            f.in_transit -= 1
            if f.in_transit == 0:
                f.idle.set()
            self.progress.unpark_all()
        self.stats["bytes_written"] += len(data)
        f.stored_size = max(f.stored_size, end)
        f.size = max(f.size, end)
        return len(data)

    def _replace(self, f: CachedFile, idx: int, page: Page | None, data: bytes) -> None:
        """A write of a whole page over a page that is absent or clean and idle."""
        if page is None:
            page = f.pages[idx] = Page()
        self.total_bytes += len(data) - len(page.data)
        page.data = data
        page.valid = True
        page.held_lo = page.held_hi = 0
        self.lru.pop((f.key, idx), None)
        page.dirty_lo, page.dirty_hi = 0, len(data)
        f.dirty_pages.add(idx)
        self.dirty_bytes += len(data)

    def _put(self, f: CachedFile, idx: int, page: Page, start: int, chunk: memoryview) -> None:
        end = start + len(chunk)
        if not isinstance(page.data, bytearray):
            page.data = bytearray(page.data)  # a clean page read in as bytes: copy on write
        old = len(page.data)
        if start > old:  # a gap before the new bytes reads as zeros
            page.data.extend(bytes(start - old))
        # Replaces [start, end) and grows the page if needed, copying the bytes once.
        page.data[start:min(end, max(old, start))] = chunk
        if end > old:
            self.total_bytes += end - old
        if not page.valid:
            if page.held_hi > page.held_lo:
                page.held_lo = min(page.held_lo, start)
                page.held_hi = max(page.held_hi, end)
            else:
                page.held_lo, page.held_hi = start, end
        if page.dirty:
            before = page.dirty_hi - page.dirty_lo
            page.dirty_lo = min(page.dirty_lo, start)
            page.dirty_hi = max(page.dirty_hi, end)
        else:
            before = 0
            page.dirty_lo, page.dirty_hi = start, end
            self.lru.pop((f.key, idx), None)
            f.dirty_pages.add(idx)
        self.dirty_bytes += (page.dirty_hi - page.dirty_lo) - before

    # ---- size changes

    async def truncate(self, f: CachedFile, size: int) -> None:
        """Resize now (write-through): drop or trim pages past the new end."""
        # Writes in flight past the new end would land after the truncate and undo it.
        # (A loop: whoever else was waiting for idle may have started another meanwhile.)
        while f.in_transit or f.frozen is not None:
            if f.frozen is not None:
                await f.frozen.wait()
            else:
                await f.idle.wait()
        # So cut the pages first: a write-back started while the backend truncates (by
        # another writer's back-pressure) must find nothing past the new end to write,
        # and a read meanwhile nothing to cache there.
        last_idx, last_len = divmod(size, PAGE_SIZE)
        self._drop_pages(f, keep_dirty=False, from_index=last_idx + (1 if last_len else 0))
        page = f.pages.get(last_idx)
        if page is not None and last_len:
            if len(page.data) > last_len:
                self.total_bytes -= len(page.data) - last_len
                page.data = page.data[:last_len]
            page.held_hi = min(page.held_hi, last_len)
            if page.held_hi <= page.held_lo:
                page.held_lo = page.held_hi = 0
            if page.dirty:
                old = page.dirty_hi - page.dirty_lo
                page.dirty_hi = min(page.dirty_hi, last_len)
                if page.dirty_hi <= page.dirty_lo:
                    page.dirty_lo = page.dirty_hi = 0
                    f.dirty_pages.discard(last_idx)
                    if page.valid and not page.pins:
                        self.lru[(f.key, last_idx)] = None
                self.dirty_bytes -= old - max(0, page.dirty_hi - page.dirty_lo)
        f.size = size
        f.resizes += 1
        try:
            await f.backend.truncate(size)
        finally:
            f.resizes += 1
        f.size = f.stored_size = size
        if not f.dirty:
            f.version = await f.backend.version()

    # ---- eviction ---------------------------------------------------------------------

    def _evict(self) -> None:
        while self.total_bytes > self.budget and self.lru:
            (key, idx), _ = self.lru.popitem(last=False)
            f = self.files.get(key)
            if f is None:
                continue
            page = f.pages.get(idx)
            if page is None or page.dirty or page.pins:
                continue
            self.total_bytes -= len(page.data)
            del f.pages[idx]
            self.stats["evicted_pages"] += 1
            if not f.pages and f.opens <= 0 and not f.dirty:
                self.files.pop(key, None)

    def counters(self) -> dict:
        return dict(self.stats, cached_bytes=self.total_bytes, dirty_bytes=self.dirty_bytes,
                    budget=self.budget, dirty_limit=self.dirty_limit, files=len(self.files))
