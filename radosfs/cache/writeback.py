"""Write-back: how dirty pages of the page cache reach the cluster (see pagecache.py for
the state it works on).

Dirty data is written back on flush (fsync, close), at umount, in the background as soon
as a file has a full write unit of dirty data (so RADOS sees MiB-sized writes while `cp`
runs), after DIRTY_EXPIRE seconds while a file stays open, and when dirty data passes
`dirty_limit` -- then writers wait (back-pressure). A file whose write-back fails refuses
new writes with that errno before storing anything, and retries at most every WRITE_RETRY
seconds, so refused data never piles up in memory or lands later.
"""
from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from typing import Hashable

import trio

from ..errors import RadosFSError, errno_of
from .pages import PAGE_SIZE, CachedFile, Page

log = logging.getLogger(__name__)

DIRTY_EXPIRE = 5.0   # seconds data may stay unwritten while its file stays open
WRITE_RETRY = 1.0    # a file whose write-back fails: writes refused retry at most this often


class WriteBack:
    """The write-back half of `PageCache` (which sets up this state in its __init__)."""
    files: dict[Hashable, CachedFile]
    lru: OrderedDict[tuple[Hashable, int], None]
    dirty_bytes: int
    dirty_limit: int
    transit_bytes: int
    max_transit: int
    progress: trio.lowlevel.ParkingLot
    nursery: trio.Nursery | None
    stats: dict[str, int]

    def _put(self, f: CachedFile, idx: int, page: Page, start: int, chunk: memoryview) -> None:
        raise NotImplementedError  # PageCache: store written bytes in a page

    def _evict(self) -> None:
        raise NotImplementedError  # PageCache: drop clean pages past the budget

    async def _admit(self, f: CachedFile) -> None:
        """Before a write stores anything: refuse it if its file cannot be written back
        (its data would only pile up in memory and land later, after the writer was told
        it failed), and hold it while dirty data is over the limit."""
        if f.failed is not None:
            f.error = None  # reported now
            now = trio.current_time()
            if not f.in_transit and now - f.retried_at >= WRITE_RETRY:
                # Try again now and then: the cluster may take it now (quota lifted).
                f.retried_at = now
                self._start_writeback(f, full_only=False)
            raise RadosFSError(f.failed, f"write-back to {f.key} fails", logged=True)
        while self.dirty_bytes > self.dirty_limit:
            self._kick_all(f)
            if f.failed is not None:
                f.error = None
                raise RadosFSError(f.failed, f"write-back to {f.key} fails", logged=True)
            if not self.transit_bytes:
                # Nothing in flight: the rest is data whose write-back fails. This file's
                # is not: once stored it goes out at once (`write` starts it).
                if self.stuck_bytes() > self.dirty_limit:
                    # The memory cap for data that cannot be written: refused.
                    err = self._stuck_errno()
                    raise RadosFSError(err, "too much data waits for write-back that fails",
                                      logged=True)
                return
            await self.progress.park()

    def stuck_bytes(self) -> int:
        return sum(o.dirty_bytes for o in self.files.values() if o.failed is not None)

    def _stuck_errno(self) -> int:
        for o in self.files.values():
            if o.failed is not None:
                return o.failed
        return errno.EIO

    def _kick_all(self, f: CachedFile) -> None:
        if f.failed is None:
            self._start_writeback(f, full_only=False)
        for other in list(self.files.values()):
            if other.dirty_pages and other.error is None and other.failed is None:
                self._start_writeback(other, full_only=False)  # failing: its flush retries

    async def _throttle_writer(self, f: CachedFile) -> None:
        """Back-pressure: the writer (whose bytes are stored: it succeeds) waits until
        dirty data is below the limit again, or until nothing more can be written."""
        while self.dirty_bytes > self.dirty_limit:
            self._kick_all(f)
            if not self.transit_bytes:
                return  # what is left cannot go now (its write-back failed): don't wait
            await self.progress.park()

    def _runs(self, f: CachedFile, full_only: bool) -> list[tuple[int, list[int]]]:
        """Contiguous dirty byte runs, cut at the backend's write-unit boundaries.

        Returns (offset, page indexes). With `full_only`, only runs that fill a whole write
        unit (or reach the end of the file) are returned: the rest may still grow.
        """
        unit = max(PAGE_SIZE, f.backend.write_unit)
        runs: list[tuple[int, list[int]]] = []
        cur: list[int] = []
        cur_start = cur_end = -1
        for idx in sorted(f.dirty_pages):
            page = f.pages[idx]
            if page.writing:
                # Its last write-back is in flight; two could land in either order.
                cur_end = -1
                continue
            lo = idx * PAGE_SIZE + page.dirty_lo
            hi = idx * PAGE_SIZE + page.dirty_hi
            if cur and lo == cur_end and lo % unit != 0:
                cur.append(idx)
                cur_end = hi
                continue
            if cur:
                runs.append((cur_start, cur))
            cur, cur_start, cur_end = [idx], lo, hi
        if cur:
            runs.append((cur_start, cur))
        if full_only:
            def full(run: tuple[int, list[int]]) -> bool:
                start, pages = run
                last = pages[-1]
                end = last * PAGE_SIZE + f.pages[last].dirty_hi
                return end - start >= unit or end % unit == 0 and end - start >= PAGE_SIZE
            runs = [r for r in runs if full(r)]
        return runs

    def _start_writeback(self, f: CachedFile, full_only: bool) -> None:
        if self.nursery is None or not f.dirty_pages or f.frozen is not None:
            return
        # The backend may ask to hold back write-behind (not flush or back-pressure).
        if not f.backend.plan_writeback(f.size, f.stored_size) and full_only:
            return
        for offset, idxs in self._runs(f, full_only):
            if self.transit_bytes >= self.max_transit:
                break  # the rest goes when a write in flight is answered
            data = self._take_run(f, idxs)
            self.transit_bytes += len(data)
            self.nursery.start_soon(self._write_run, f, offset, idxs, data)

    def _take_run(self, f: CachedFile, idxs: list[int]) -> bytes:
        """Copy a run's dirty bytes and mark them in transit (no await: atomic)."""
        parts = []
        for idx in idxs:
            page = f.pages[idx]
            parts.append(memoryview(page.data)[page.dirty_lo:page.dirty_hi])
            self.dirty_bytes -= page.dirty_hi - page.dirty_lo
            page.dirty_lo = page.dirty_hi = 0
            page.pins += 1
            page.writing += 1
            f.dirty_pages.discard(idx)
        f.in_transit += 1
        f.idle = trio.Event() if f.idle.is_set() else f.idle
        data = b"".join(parts)  # the one copy, made before any await
        for view in parts:
            view.release()  # pages may grow again
        return data

    async def _write_run(self, f: CachedFile, offset: int, idxs: list[int],
                         data: bytes) -> None:
        try:
            await f.backend.write(offset, data)
            self.stats["bytes_written"] += len(data)
            f.stored_size = max(f.stored_size, offset + len(data))
            if f.failed is not None:
                log.warning("write-back to %s works again", f.key)
                f.failed = None
        except Exception as exc:
            err = errno_of(exc) or errno.EIO
            self.stats["writeback_errors"] += 1
            # Once per file and errno, not once per run and retry.
            log.log(logging.DEBUG if f.failed == err else logging.ERROR,
                    "write-back to %s failed: %s (%d bytes at %d; kept, and new writes "
                    "refused, until a retry works)", f.key, exc, len(data), offset)
            f.failed = err
            if f.error is None:
                f.error = err
            self._redirty(f, offset, idxs, data)
        finally:
            self.transit_bytes -= len(data)
            for idx in idxs:
                page = f.pages.get(idx)
                if page is not None:
                    page.pins -= 1
                    page.writing -= 1
                    if not page.pins and not page.dirty and page.valid:
                        self.lru[(f.key, idx)] = None
                    elif (not page.pins and not page.dirty and page.loading is None
                          and f.pages.get(idx) is page):
                        # Written back and never read: it holds nothing the cluster
                        # lacks, and outside the LRU it would never be freed.
                        self.total_bytes -= len(page.data)
                        del f.pages[idx]
            f.in_transit -= 1
            # Keep the pipe full: start what waited for room (full runs only; flush and
            # back-pressure ask for the rest themselves). Not after a failure: retrying at
            # once would loop as fast as the cluster refuses; flush retries.
            if f.error is None:
                self._start_writeback(f, full_only=True)
            if f.in_transit == 0:
                f.idle.set()
            self.progress.unpark_all()
            self._evict()

    def _redirty(self, f: CachedFile, offset: int, idxs: list[int], data: bytes) -> None:
        """A failed write: its bytes are dirty again (unless the file was dropped)."""
        if self.files.get(f.key) is not f:
            return
        pos = offset
        for idx in idxs:
            page = f.pages.get(idx)
            start = pos - idx * PAGE_SIZE
            n = min(PAGE_SIZE - start, offset + len(data) - pos)
            if page is not None and start + n <= len(page.data):
                self._put(f, idx, page, start, memoryview(page.data)[start:start + n])
            pos += n

    async def flush(self, f: CachedFile) -> None:
        """Write back every dirty byte of the file and wait until the cluster has it all.

        Raises the errno of a failed write-back (once), after which the data stays dirty
        and the next flush tries again.
        """
        while True:
            if f.frozen is not None:  # its stored data is moving (rename, unlink)
                await f.frozen.wait()
                continue
            self._start_writeback(f, full_only=False)
            await f.idle.wait()
            # Not just `dirty_pages`: someone else (another flush, write-behind) may have
            # taken them meanwhile, and they are not in the cluster until answered.
            if not f.dirty or f.error is not None:
                break
            if not f.in_transit and self.transit_bytes >= self.max_transit:
                # Other files' writes hold the budget: wait for one of them.
                await self.progress.park()
        if f.error is None:
            await f.backend.flush()
            if not f.dirty:
                f.version = await f.backend.version()
        err, f.error = f.error, None
        if err is not None:  # its cause was logged when the write-back failed
            raise RadosFSError(err, f"write-back to {f.key} failed", logged=True)

    async def expire_dirty(self, delay: float = DIRTY_EXPIRE) -> None:
        """Background task: write back data dirty for `delay` seconds even while its file
        stays open (a log being appended to), so a crash of the daemon loses at most that
        much -- as the kernel's dirty_expire does for local filesystems."""
        while True:
            await trio.sleep(delay / 5)
            now = trio.current_time()
            for f in list(self.files.values()):
                if not f.dirty_pages:
                    f.dirty_since = None
                elif (f.dirty_since is not None and now - f.dirty_since >= delay
                      and f.error is None):  # after a failure, flush retries
                    f.dirty_since = now
                    self._start_writeback(f, full_only=False)

    async def flush_all(self, stall: float | None = None) -> list[tuple[Hashable, int]]:
        """Write back everything (umount); returns the files that failed, with the errno.

        Files are written back concurrently (a cluster that does not answer costs one
        op_timeout, not one per file). With `stall`, it gives up once no write-back has
        been acknowledged for `stall` seconds: what is still dirty then is reported with
        ETIMEDOUT. A cluster that is slow but answering is waited for.
        """
        files = [f for f in self.files.values() if f.dirty]
        failed: dict[Hashable, int] = {}
        if not files:
            return []

        async def one(f: CachedFile) -> None:
            try:
                await self.flush(f)
            except Exception as exc:  # noqa: BLE001 -- reported per file
                failed[f.key] = errno_of(exc) or errno.EIO

        async def watch(scope: trio.CancelScope) -> None:
            written, since = self.stats["bytes_written"], trio.current_time()
            while True:
                await trio.sleep(min(1.0, stall or 1.0))
                if self.stats["bytes_written"] != written:
                    written, since = self.stats["bytes_written"], trio.current_time()
                elif trio.current_time() - since >= (stall or 0):
                    log.error("write-back made no progress for %.0fs: giving up on what "
                              "is left", trio.current_time() - since)
                    scope.cancel()
                    return

        async with trio.open_nursery() as outer:
            if stall is not None:
                outer.start_soon(watch, outer.cancel_scope)
            async with trio.open_nursery() as flushes:
                for f in files:
                    flushes.start_soon(one, f)
            outer.cancel_scope.cancel()
        for f in files:
            if f.dirty and f.key not in failed:
                failed[f.key] = errno.ETIMEDOUT
        return [(key, err) for key, err in failed.items()]

    async def flush_where(self, match) -> None:
        """Write back every file whose key satisfies `match` (e.g. one pool's files)."""
        for f in list(self.files.values()):
            if f.dirty and match(f.key):
                await self.flush(f)
