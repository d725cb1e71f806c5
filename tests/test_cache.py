"""Pure-logic unit tests of the page cache (radosfs/cache.py) against an in-memory backend.

No cluster is needed: `MemBackend` keeps the stored bytes in a bytearray and records every
call. Each test runs under `trio.run` with a MockClock that jumps ahead whenever all tasks
are blocked, so artificial backend delays cost no wall time and a deadlock turns into a
quick `trio.TooSlowError` from the test's `fail_after` instead of a hung test run.

Timing model of the backend (chosen to expose ordering mistakes in the cache):
* a read is served when it is called (it returns the bytes stored at that moment), then
  its reply takes `read_delay`;
* a write or truncate takes effect when it completes, `write_delay` after the call (as a
  write queued behind the bridge's throttle or split into pieces would). Two writes of the
  same bytes in flight at once could land in either order (trio starts tasks in either
  order, too), so the backend records every such overlap and each test checks there was
  none.

A cache that loops on the backend makes it raise `Runaway` (a BaseException, which the
cache's `except Exception` cannot swallow), and a wall-clock alarm raises it in a loop
that never yields at all, so such bugs fail fast instead of hanging the test run.

Run without the cluster fixtures: `python -m pytest --noconftest tests/test_cache.py`.
"""
from __future__ import annotations

import errno
import random
import signal
import time
from typing import Awaitable, Callable

import pytest
import trio
import trio.testing

from radosfs.cache import PAGE_SIZE, PageCache, ReadState
from radosfs.errors import RadosFSError

MiB = 1 << 20
KiB = 1 << 10


class Runaway(BaseException):
    """The cache keeps calling the backend: a livelock."""


class MemBackend:
    """A `Backend` over a bytearray that records each call."""

    instances: list["MemBackend"] = []
    MAX_CALLS = 20000
    MAX_SECONDS = 30.0  # wall clock: virtual time does not pass in a busy loop

    def __init__(self, data: bytes = b"", key: str = "obj", write_unit: int = 4 * MiB,
                 read_delay: float = 0.0, write_delay: float = 0.0,
                 read_only: bool = False, writes_in_place: bool = False) -> None:
        self.key = key
        self.read_only = read_only
        self.writes_in_place = writes_in_place
        self.write_unit = write_unit
        self.data = bytearray(data)
        self.read_delay = read_delay
        self.write_delay = write_delay
        self.token = 0
        self.fail_write: int | None = None  # errno to fail writes with
        self.fail_read: int | None = None
        self.calls: list[tuple] = []
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, int]] = []
        self.truncates: list[int] = []
        self.in_flight: list[tuple[int, int]] = []
        self.overlaps: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self.planned: list[tuple[int, int]] = []
        self.hold_back = False  # plan_writeback's answer: hold background write-back
        self.started = time.monotonic()
        MemBackend.instances.append(self)

    def _record(self, *call) -> None:
        self.calls.append(call)
        if len(self.calls) > self.MAX_CALLS:
            raise Runaway(f"{self.key}: more than {self.MAX_CALLS} backend calls")
        if time.monotonic() - self.started > self.MAX_SECONDS:
            raise Runaway(f"{self.key}: still called after {self.MAX_SECONDS} s")

    @staticmethod
    async def _pause(delay: float) -> None:
        if delay:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()

    async def size(self) -> int:
        self._record("size")
        await trio.lowlevel.checkpoint()
        return len(self.data)

    async def read(self, offset: int, length: int) -> bytes:
        self._record("read", offset, length)
        self.reads.append((offset, length))
        if self.fail_read is not None:
            await self._pause(self.read_delay)
            raise OSError(self.fail_read, "injected read failure")
        data = bytes(self.data[offset:offset + length])
        await self._pause(self.read_delay)
        return data

    async def write(self, offset: int, data: bytes) -> None:
        self._record("write", offset, len(data))
        span = (offset, offset + len(data))
        self.overlaps.extend((other, span) for other in self.in_flight
                             if other[0] < span[1] and span[0] < other[1])
        self.in_flight.append(span)
        try:
            await self._pause(self.write_delay)
        finally:
            self.in_flight.remove(span)
        if self.fail_write is not None:
            raise OSError(self.fail_write, "injected write failure")
        self.writes.append((offset, len(data)))
        self.store(offset, data)

    def store(self, offset: int, data: bytes) -> None:
        """Change the stored bytes (also used by tests as 'another client wrote')."""
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset:offset + len(data)] = data
        self.token += 1

    async def truncate(self, size: int) -> None:
        self._record("truncate", size)
        await self._pause(self.write_delay)
        self.truncates.append(size)
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))
        self.token += 1

    async def flush(self) -> None:
        self._record("flush")
        await trio.lowlevel.checkpoint()

    async def version(self):
        self._record("version")
        await trio.lowlevel.checkpoint()
        return (len(self.data), self.token)

    def plan_writeback(self, size: int, stored_size: int) -> bool:
        self.planned.append((size, stored_size))
        return not self.hold_back


# ---- helpers -----------------------------------------------------------------------------

def run_cache(body: Callable[..., Awaitable[None]], *, timeout: float = 600.0,
              **cache_kw) -> None:
    """Run `body(cache, nursery)` under trio with a live nursery for write-behind/prefetch.

    The clock is virtual (autojump): sleeps are free, and a deadlock hits `timeout`.
    """
    async def main() -> None:
        cache = PageCache(**cache_kw)
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                cache.nursery = nursery
                await body(cache, nursery)
                nursery.cancel_scope.cancel()
        check_invariants(cache)

    def alarm(signum, frame):
        raise Runaway("still running after 30 s of wall-clock time")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        for be in MemBackend.instances:
            assert be.overlaps == [], f"{be.key}: overlapping writes in flight"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        MemBackend.instances.clear()


def check_invariants(cache: PageCache) -> None:
    """The accounting the module docstring promises."""
    total = dirty = 0
    for f in cache.files.values():
        for idx, page in f.pages.items():
            total += len(page.data)
            if page.dirty:
                dirty += page.dirty_hi - page.dirty_lo
                assert idx in f.dirty_pages, (f.key, idx)
            if page.dirty or page.pins:
                assert (f.key, idx) not in cache.lru, (f.key, idx)
        for idx in f.dirty_pages:
            assert f.pages[idx].dirty, (f.key, idx)
    assert cache.total_bytes == total
    assert cache.dirty_bytes == dirty


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def page_of(offset: int) -> int:
    return offset // PAGE_SIZE


# ---- eviction ----------------------------------------------------------------------------

def test_lru_evicts_oldest_clean_page_and_keeps_touched_ones():
    budget = 8 * MiB
    content = pattern(16 * MiB, 1)
    be = MemBackend(content, key="b")

    async def body(cache, nursery):
        f, _ = await cache.open(be)

        async def read_page(i):
            assert await cache.read(f, i * MiB, MiB) == content[i * MiB:(i + 1) * MiB]
            assert cache.total_bytes <= budget
            check_invariants(cache)

        for i in range(8):
            await read_page(i)
        assert cache.stats["evicted_pages"] == 0
        assert set(f.pages) == set(range(8))
        reads = len(be.reads)
        await read_page(0)                      # touch: becomes most recent, no backend read
        assert len(be.reads) == reads
        await read_page(8)                      # evicts page 1, the oldest untouched
        assert set(f.pages) == {0, 2, 3, 4, 5, 6, 7, 8}
        await read_page(9)                      # then page 2
        assert set(f.pages) == {0, 3, 4, 5, 6, 7, 8, 9}
        await read_page(3)                      # touch 3
        await read_page(10)                     # evicts 4 (3 was touched)
        assert set(f.pages) == {0, 3, 5, 6, 7, 8, 9, 10}
        assert [idx for (_, idx) in cache.lru] == [5, 6, 7, 0, 8, 9, 3, 10]
        assert cache.stats["evicted_pages"] == 3
        reads = len(be.reads)
        await read_page(1)                      # an evicted page is read again
        assert len(be.reads) == reads + 1

    run_cache(body, budget=budget)


def test_dirty_and_pinned_pages_are_never_evicted():
    budget = 8 * MiB
    other = pattern(32 * MiB, 2)
    a = MemBackend(key="a", write_unit=1 << 40, write_delay=5.0)  # no write-behind
    b = MemBackend(other, key="b")
    a_data = pattern(3 * MiB, 3)

    async def body(cache, nursery):
        fa, _ = await cache.open(a)
        fb, _ = await cache.open(b)
        await cache.write(fa, 0, a_data)
        assert cache.dirty_bytes == 3 * MiB

        async def read_all_of_b():
            for i in range(32):
                assert await cache.read(fb, i * MiB, MiB) == other[i * MiB:(i + 1) * MiB]
                assert cache.total_bytes <= budget
                check_invariants(cache)

        await read_all_of_b()
        assert sorted(fa.pages) == [0, 1, 2]
        assert all(fa.pages[i].dirty for i in range(3))
        assert cache.stats["evicted_pages"] >= 32 - 5

        nursery.start_soon(cache.flush, fa)
        await trio.sleep(1)                     # the write is in flight: pages pinned
        assert a.writes == [] and fa.in_transit == 1
        assert all(fa.pages[i].pins and not fa.pages[i].dirty for i in range(3))
        await read_all_of_b()
        assert sorted(fa.pages) == [0, 1, 2]
        assert await cache.read(fa, 0, 3 * MiB) == a_data

        await trio.sleep(10)                    # write answered: a's pages are clean now
        assert bytes(a.data) == a_data
        assert not fa.dirty
        assert all((fa.key, i) in cache.lru for i in range(3))
        await read_all_of_b()                   # ... so they are evicted like any other
        assert not fa.pages

    run_cache(body, budget=budget)


def test_read_returns_when_cache_is_full_of_dirty_pages():
    # More dirty data than the budget: a page read in for a reader must still reach it
    # (rather than being evicted at once and read again, forever).
    a = MemBackend(key="a", write_unit=1 << 40)
    b = MemBackend(pattern(2 * MiB, 4), key="b", read_delay=0.01)

    async def body(cache, nursery):
        fa, _ = await cache.open(a)
        fb, _ = await cache.open(b)
        await cache.write(fa, 0, pattern(9 * MiB, 5))
        assert cache.total_bytes > cache.budget
        with trio.fail_after(30):
            assert await cache.read(fb, 0, 2 * MiB) == bytes(b.data)
        assert len(b.reads) == 2
        # a hole (below the size, past what is stored) is read in without the backend
        await cache.write(fa, 20 * MiB, b"end")
        assert await cache.read(fa, 15 * MiB, 4096) == bytes(4096)
        check_invariants(cache)

    run_cache(body, budget=8 * MiB, dirty_limit=16 * MiB)


def test_written_pages_of_a_stored_file_do_not_pin_memory_after_writeback():
    # Small writes into pages that were never read: once written back, those pages hold
    # nothing the cluster lacks, and must not stay in memory outside the LRU for good.
    budget = 8 * MiB
    be = MemBackend(pattern(64 * MiB, 6), key="b", write_unit=MiB)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(be.data)
        for i in range(64):
            data = pattern(4 * KiB, 100 + i)
            off = i * MiB + 512 * KiB
            await cache.write(f, off, data)
            ref[off:off + len(data)] = data
            if i % 8 == 7:
                await cache.flush(f)
            check_invariants(cache)
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert cache.total_bytes <= budget
        assert await cache.read(f, 0, 64 * MiB) == ref

    run_cache(body, budget=budget)


# ---- write-back --------------------------------------------------------------------------

def test_small_sequential_writes_reach_the_backend_as_whole_write_units():
    unit = 4 * MiB
    size = 30 * MiB + 384 * KiB
    data = pattern(size, 7)
    be = MemBackend(key="w", write_unit=unit)

    async def body(cache, nursery):
        f, fresh = await cache.open(be)
        assert fresh is False
        chunk = 128 * KiB
        for off in range(0, size, chunk):
            await cache.write(f, off, data[off:off + chunk])
            assert cache.dirty_bytes <= unit  # write-behind as soon as a unit is full
        assert f.size == size
        await trio.sleep(1)
        assert be.calls and be.calls[0][0] == "version"
        # every full unit went out in the background before anyone flushed
        started = [c for c in be.calls if c[0] == "write"]
        assert len(started) == size // unit
        await cache.flush(f)
        assert bytes(be.data) == data
        assert len(be.writes) == size // unit + 1
        for off, n in be.writes[:-1]:
            assert off % unit == 0 and n == unit
        assert sorted(be.writes)[-1] == (size // unit * unit, size % unit)
        assert cache.dirty_bytes == 0 and not f.dirty
        assert be.reads == []  # a new file is never read back
        assert await cache.read(f, 0, size) == data

    run_cache(body)


def test_partial_write_to_stored_file_sends_only_the_changed_bytes():
    stored = pattern(12 * MiB, 8)
    be = MemBackend(stored, key="p", write_unit=4 * MiB)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(stored)
        edits = [(3 * MiB - 5000, pattern(10000, 9)),       # across a page boundary
                 (8 * MiB - 7000, pattern(20000, 10)),      # across a write-unit boundary
                 (5 * MiB + 123, pattern(77, 11))]          # a few bytes mid-page
        for off, d in edits:
            assert await cache.write(f, off, d) == len(d)
            ref[off:off + len(d)] = d
        assert cache.dirty_bytes == 10000 + 20000 + 77
        assert be.reads == []  # writing needs no read-modify-write
        await cache.flush(f)
        assert sorted(be.writes) == [(3 * MiB - 5000, 10000), (5 * MiB + 123, 77),
                                     (8 * MiB - 7000, 7000), (8 * MiB, 13000)]
        assert bytes(be.data) == ref and len(be.data) == len(stored)
        for off, d in edits:
            assert await cache.read(f, off - 3, len(d) + 6) == ref[off - 3:off + len(d) + 3]
        assert await cache.read(f, 0, len(ref)) == ref

    run_cache(body)


def test_read_after_write_while_write_back_is_in_flight():
    # A written page that was never read is written back; a read (or a second write) that
    # comes before the cluster has answered must still see the written bytes.
    stored = pattern(4 * MiB, 12)
    be = MemBackend(stored, key="t", write_unit=MiB, write_delay=1.0)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(stored)
        a = pattern(128 * KiB, 13)
        await cache.write(f, MiB, a)
        ref[MiB:MiB + len(a)] = a
        nursery.start_soon(cache.flush, f)
        await trio.sleep(0.1)
        assert f.in_transit == 1
        assert await cache.read(f, MiB, 256 * KiB) == ref[MiB:MiB + 256 * KiB]
        # a second, separate range in another such page while its first is in flight
        b1, b2 = pattern(64 * KiB, 14), pattern(64 * KiB, 15)
        await cache.write(f, 2 * MiB, b1)
        ref[2 * MiB:2 * MiB + len(b1)] = b1
        nursery.start_soon(cache.flush, f)
        await trio.sleep(0.1)
        await cache.write(f, 2 * MiB + 512 * KiB, b2)
        ref[2 * MiB + 512 * KiB:2 * MiB + 512 * KiB + len(b2)] = b2
        assert await cache.read(f, 2 * MiB, MiB) == ref[2 * MiB:3 * MiB]
        await trio.sleep(5)
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert await cache.read(f, 0, 4 * MiB) == ref  # and not stale once answered

    run_cache(body)


def test_rewrite_during_write_back_goes_out_after_it():
    # Bytes rewritten while their write-back is in flight are written again only after
    # that write is answered: two writes of the same bytes could land in either order.
    be = MemBackend(key="o", write_unit=4 * MiB, write_delay=1.0)
    old, new = pattern(MiB + 300, 32), pattern(MiB + 300, 33)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.write(f, 100, old)
        nursery.start_soon(cache.flush, f)
        await trio.sleep(0.1)
        assert f.in_transit == 1
        await cache.write(f, 100, new)
        await cache.write(f, 2 * MiB, b"z" * 10)      # another page: may go at once
        await cache.flush(f)
        assert be.overlaps == []
        assert bytes(be.data) == bytes(100) + new + bytes(2 * MiB - 100 - len(new)) + b"z" * 10
        assert await cache.read(f, 100, len(new)) == new

    run_cache(body)


def test_every_flush_returns_only_once_its_data_is_stored():
    # Two flushes wait for the same write-back; when it is answered, one of them starts
    # the next (bytes rewritten meanwhile) and the other must wait for that one too.
    be = MemBackend(key="fl", write_unit=4 * MiB, write_delay=1.0)
    old, new = pattern(2 * MiB, 37), pattern(2 * MiB, 38)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.write(f, 0, old)
        returned = []

        async def flush(name, allowed):
            await cache.flush(f)
            assert bytes(be.data) in allowed, name
            returned.append(name)

        async with trio.open_nursery() as flushers:
            flushers.start_soon(flush, "first", (old, new))
            await trio.sleep(0.1)
            await cache.write(f, 0, new)
            flushers.start_soon(flush, "second", (new,))
            flushers.start_soon(flush, "third", (new,))
        assert sorted(returned) == ["first", "second", "third"]
        assert bytes(be.data) == new

    run_cache(body)


@pytest.mark.parametrize("budget_mib,write_unit,write_delay,read_delay", [
    (512, 4 * MiB, 0.0, 0.0),      # everything stays cached
    (8, MiB, 0.01, 0.0),           # tiny budget: pages are evicted and read back
    (8, 4 * MiB, 0.02, 0.01),      # slow backend: write-behind and reads overlap
])
def test_read_after_write_random(budget_mib, write_unit, write_delay, read_delay):
    rng = random.Random(1234 + budget_mib + write_unit)
    stored = rng.randbytes(6 * MiB)
    be = MemBackend(stored, key="r", write_unit=write_unit, write_delay=write_delay,
                    read_delay=read_delay)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(stored)
        for step in range(500):
            op = rng.random()
            if op < 0.5:
                off = rng.randrange(0, 12 * MiB)
                n = rng.choice([1, 100, 4096, rng.randrange(1, 300 * KiB), MiB + 17])
                d = rng.randbytes(n)
                assert await cache.write(f, off, d) == n
                if off > len(ref):
                    ref.extend(bytes(off - len(ref)))
                ref[off:off + n] = d
            elif op < 0.9:
                off = rng.randrange(0, 13 * MiB)
                n = rng.choice([1, 4096, rng.randrange(1, 2 * MiB)])
                got = await cache.read(f, off, n)
                assert got == ref[off:off + n], (step, off, n)
            elif op < 0.95:
                await cache.flush(f)
                assert bytes(be.data) == ref
            else:
                await trio.sleep(rng.random() * 0.05)
            assert f.size == len(ref)
            check_invariants(cache)
            if budget_mib == 8:
                # over the budget only by what cannot be evicted: dirty or being written
                assert cache.total_bytes <= (cache.budget + cache.dirty_limit
                                             + cache.max_transit + 2 * MiB)
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert await cache.read(f, 0, len(ref)) == ref
        if budget_mib == 8:
            assert cache.stats["evicted_pages"] > 0
            # once everything is written back, the budget holds again
            assert cache.total_bytes <= cache.budget

    run_cache(body, budget=budget_mib * MiB)


# ---- truncate ----------------------------------------------------------------------------

def test_truncate_cached_pages_shrink_mid_page_then_grow():
    stored = pattern(3 * MiB, 16)
    be = MemBackend(stored, key="tr")

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        assert await cache.read(f, 0, 3 * MiB) == stored  # all three pages cached
        ref = bytearray(stored)
        d1 = pattern(200 * KiB, 17)                 # [1.2, 1.4) MiB: straddles the cut
        d2 = pattern(300 * KiB, 18)                 # in page 2: entirely past the cut
        off1, off2 = MiB + 200 * KiB, 2 * MiB + 500 * KiB
        await cache.write(f, off1, d1)
        await cache.write(f, off2, d2)
        ref[off1:off1 + len(d1)] = d1
        cut = MiB + 300 * KiB
        await cache.truncate(f, cut)
        assert be.truncates == [cut] and len(be.data) == cut
        assert f.size == cut
        assert 2 not in f.pages
        assert len(f.pages[1].data) == 300 * KiB
        assert cache.dirty_bytes == 100 * KiB        # only [1.2, 1.3) MiB is left dirty
        check_invariants(cache)
        assert await cache.read(f, 0, 3 * MiB) == ref[:cut]

        await cache.truncate(f, 3 * MiB)
        assert be.truncates == [cut, 3 * MiB]
        assert f.size == 3 * MiB
        got = await cache.read(f, 0, 3 * MiB)
        assert got[:cut] == ref[:cut]
        assert got[cut:] == bytes(3 * MiB - cut)    # past the shrink point: zeros
        await cache.flush(f)
        assert be.writes == [(off1, cut - off1)]    # nothing past the cut was written
        expect = bytearray(ref[:cut]) + bytes(3 * MiB - cut)
        assert bytes(be.data) == expect
        assert await cache.read(f, 0, 4 * MiB) == expect

    run_cache(body)


def test_truncate_is_not_undone_by_write_back_of_cut_pages():
    # While the backend truncates, another writer's back-pressure writes back every file's
    # dirty pages; those past the new end must not be among them.
    limit = 2 * MiB
    f_be = MemBackend(key="cut", write_unit=4 * MiB, write_delay=1.0)
    g_be = MemBackend(key="other", write_unit=4 * MiB, write_delay=0.1)

    async def body(cache, nursery):
        f, _ = await cache.open(f_be)
        g, _ = await cache.open(g_be)
        await cache.write(f, 0, pattern(MiB, 34))
        await cache.write(f, MiB + 100, pattern(300 * KiB, 35))
        head = bytes((await cache.read(f, 0, 512 * KiB)))

        async def other_writer():
            await trio.sleep(0.5)                     # while f's truncate is in flight
            g_data = pattern(3 * MiB, 36)
            await cache.write(g, 0, g_data)           # over the limit: writes back all
            await cache.flush(g)
            assert bytes(g_be.data) == g_data

        nursery.start_soon(other_writer)
        await cache.truncate(f, 512 * KiB)
        assert f.size == 512 * KiB
        await trio.sleep(5)
        await cache.flush(f)
        assert len(f_be.data) == 512 * KiB
        assert bytes(f_be.data) == head
        assert all(off + n <= 512 * KiB for off, n in f_be.writes)
        assert await cache.read(f, 0, MiB) == head

    run_cache(body, budget=16 * MiB, dirty_limit=limit)


def test_truncate_waits_for_write_backs_started_while_it_waited():
    # Truncate waits for the file's write-backs in flight; flushes waiting alongside it
    # may wake first and start new ones, which it must wait for as well before cutting
    # pages. (Who of those waiting on one trio.Event runs first is arbitrary, so several
    # flushes wait with it: on a cache that does not loop, one runs first nearly always.)
    be = MemBackend(key="tw", write_unit=4 * MiB, write_delay=1.0)
    ref = bytearray()

    def put(off, data):
        if off > len(ref):
            ref.extend(bytes(off - len(ref)))
        ref[off:off + len(data)] = data

    async def body(cache, nursery):
        f, _ = await cache.open(be)

        async def flush():
            try:
                await cache.flush(f)
            except RadosFSError:
                pass

        a, b, c = pattern(MiB, 42), pattern(2 * MiB + 512 * KiB, 43), pattern(2 * MiB, 44)
        await cache.write(f, 0, a)
        put(0, a)
        nursery.start_soon(flush)                    # writes page 0 until t=1
        await trio.sleep(0.1)
        await cache.write(f, 512 * KiB, b)
        put(512 * KiB, b)
        cut = MiB + 512 * KiB
        truncated = trio.Event()

        async def truncate():
            await cache.truncate(f, cut)             # waits for the write in flight
            truncated.set()

        nursery.start_soon(truncate)
        await trio.sleep(0.1)
        for _ in range(8):
            nursery.start_soon(flush)                # one takes pages 1-2, page 0 is busy
        await trio.sleep(0.1)
        await cache.write(f, MiB, c)                 # more for the flushes to find
        put(MiB, c)
        await trio.sleep(1.0)                        # t=1.3: the next write-back is out
        be.fail_write = errno.EDQUOT                 # ... and will fail
        await trio.sleep(5)
        be.fail_write = None
        with trio.fail_after(60):
            await truncated.wait()
        assert f.size == cut
        del ref[cut:]
        await flush()
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert await cache.read(f, 0, 2 * MiB) == ref

    run_cache(body)


@pytest.mark.parametrize("regrow", ["truncate", "write"])
def test_truncate_while_a_page_is_being_read(regrow):
    # A read-in that started before a shrink (so it got the old bytes) and ends after the
    # file grew again must not bring the old bytes back past the cut.
    stored = pattern(4 * MiB, 41)
    be = MemBackend(stored, key="tr2", read_delay=1.0, write_delay=0.01)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        got = {}

        async def reader():
            got["first"] = await cache.read(f, 2 * MiB, MiB)

        nursery.start_soon(reader)
        await trio.sleep(0.1)                       # its backend read has been served
        cut = 2 * MiB + 512 * KiB
        await cache.truncate(f, cut)
        if regrow == "truncate":
            await cache.truncate(f, 4 * MiB)
            expect = stored[:cut] + bytes(4 * MiB - cut)
        else:
            await cache.write(f, 4 * MiB - 10, b"0123456789")
            expect = stored[:cut] + bytes(4 * MiB - 10 - cut) + b"0123456789"
        await trio.sleep(5)
        assert got["first"] in (stored[2 * MiB:3 * MiB], expect[2 * MiB:3 * MiB])
        assert await cache.read(f, 0, 4 * MiB) == expect
        await cache.flush(f)
        assert bytes(be.data) == expect

    run_cache(body)


def test_truncate_to_page_boundary_and_zero():
    stored = pattern(5 * MiB, 19)
    be = MemBackend(stored, key="tz")

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.read(f, 0, 5 * MiB)
        await cache.write(f, 2 * MiB + 10, b"x" * 1000)
        await cache.truncate(f, 2 * MiB)
        assert sorted(f.pages) == [0, 1] and cache.dirty_bytes == 0
        await cache.truncate(f, 0)
        assert not f.pages and cache.total_bytes == 0
        await cache.truncate(f, 100)
        assert await cache.read(f, 0, 200) == bytes(100)
        await cache.write(f, 50, b"abc")
        await cache.flush(f)
        assert bytes(be.data) == bytes(50) + b"abc" + bytes(47)
        assert be.writes == [(50, 3)]

    run_cache(body)


# ---- back-pressure -----------------------------------------------------------------------

def test_back_pressure_bounds_dirty_bytes_with_a_slow_backend():
    limit = 2 * MiB
    chunk = 256 * KiB
    total = 40 * MiB
    data = pattern(total, 20)
    be = MemBackend(key="bp", write_unit=4 * MiB, write_delay=0.05)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        samples = []
        for off in range(0, total, chunk):
            await cache.write(f, off, data[off:off + chunk])
            samples.append(cache.dirty_bytes)
            if off == total // 2:
                assert be.writes, "the writer got far ahead of the backend"
        assert max(samples) <= limit + chunk
        assert max(samples) > 0
        assert trio.current_time() >= 0.05 * (total // (4 * MiB)) / 2  # it did wait
        await cache.flush(f)
        assert bytes(be.data) == data

    run_cache(body, budget=16 * MiB, dirty_limit=limit)


def test_back_pressure_with_two_writers():
    limit = 2 * MiB
    chunk = 256 * KiB
    total = 16 * MiB
    data = {k: pattern(total, 21 + i) for i, k in enumerate("xy")}
    bes = {k: MemBackend(key=k, write_unit=4 * MiB, write_delay=0.05) for k in "xy"}

    async def body(cache, nursery):
        samples = []

        async def writer(k):
            f, _ = await cache.open(bes[k])
            for off in range(0, total, chunk):
                await cache.write(f, off, data[k][off:off + chunk])
                samples.append(cache.dirty_bytes)
            await cache.flush(f)

        with trio.fail_after(60):
            async with trio.open_nursery() as writers:
                writers.start_soon(writer, "x")
                writers.start_soon(writer, "y")
        assert max(samples) <= limit + 2 * chunk
        for k in "xy":
            assert bytes(bes[k].data) == data[k]

    run_cache(body, budget=16 * MiB, dirty_limit=limit)


# ---- write-back failure ------------------------------------------------------------------

def test_flush_failure_keeps_data_dirty_and_retry_succeeds():
    be = MemBackend(key="q", write_unit=4 * MiB)
    data = pattern(2 * MiB + 5, 22)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.write(f, 0, data)
        be.fail_write = errno.EDQUOT
        with pytest.raises(RadosFSError) as info:
            await cache.flush(f)
        assert info.value.errno == errno.EDQUOT
        assert be.writes == [] and bytes(be.data) == b""
        assert cache.dirty_bytes == len(data) and f.dirty
        assert cache.stats["writeback_errors"] >= 1
        check_invariants(cache)
        assert await cache.read(f, 0, len(data)) == data  # still readable from the cache
        be.fail_write = None
        await cache.flush(f)                                 # no stale error either
        assert bytes(be.data) == data
        assert cache.dirty_bytes == 0 and not f.dirty

    run_cache(body)


def test_failed_write_back_of_an_unread_page_does_not_write_garbage():
    # Stored file, page never read: write A, its write-back fails while a second write B
    # lands further into the same page; the retry must not write the bytes between A and B.
    stored = pattern(4 * MiB, 23)
    be = MemBackend(stored, key="g", write_unit=MiB, write_delay=1.0)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(stored)
        a, b = pattern(128 * KiB, 24), pattern(128 * KiB, 25)
        await cache.write(f, MiB, a)
        ref[MiB:MiB + len(a)] = a
        be.fail_write = errno.EDQUOT

        async def failing_flush():
            with pytest.raises(RadosFSError):
                await cache.flush(f)

        nursery.start_soon(failing_flush)
        await trio.sleep(0.1)
        await cache.write(f, MiB + 512 * KiB, b)
        ref[MiB + 512 * KiB:MiB + 640 * KiB] = b
        await trio.sleep(2)
        be.fail_write = None
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert await cache.read(f, 0, 4 * MiB) == ref

    run_cache(body)


def test_writer_under_back_pressure_sees_write_back_failure():
    limit = 2 * MiB
    chunk = 256 * KiB
    be = MemBackend(key="e", write_unit=4 * MiB, write_delay=0.01)
    be.MAX_CALLS = 1000
    data = pattern(8 * MiB, 26)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        be.fail_write = errno.EDQUOT
        accepted = 0
        with trio.fail_after(60):
            with pytest.raises(RadosFSError) as info:
                for off in range(0, len(data), chunk):
                    await cache.write(f, off, data[off:off + chunk])
                    accepted = off + chunk
        assert info.value.errno == errno.EDQUOT
        assert len(be.calls) < 100  # no retry storm
        be.fail_write = None
        await cache.flush(f)
        assert bytes(be.data[:accepted]) == data[:accepted]

    run_cache(body, budget=16 * MiB, dirty_limit=limit)


def test_failed_write_back_is_not_retried_in_the_background():
    # Write-behind of full units fails: the data stays dirty until a flush retries it,
    # instead of being sent again as fast as the cluster refuses it.
    be = MemBackend(key="nr", write_unit=MiB, write_delay=0.01)
    data = pattern(4 * MiB, 45)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        be.fail_write = errno.EDQUOT
        for off in range(0, len(data), 128 * KiB):
            await cache.write(f, off, data[off:off + 128 * KiB])
        await trio.sleep(10)
        assert len([c for c in be.calls if c[0] == "write"]) == 4  # one try per unit
        assert cache.dirty_bytes == len(data)
        with pytest.raises(RadosFSError) as info:
            await cache.flush(f)
        assert info.value.errno == errno.EDQUOT
        be.fail_write = None
        await cache.flush(f)
        assert bytes(be.data) == data

    run_cache(body, dirty_limit=64 * MiB)


def test_back_pressure_does_not_keep_retrying_another_files_failing_write_back():
    # File p cannot be written (quota); a writer of file q under back-pressure must get
    # on with its own data, not wait for (and re-send) p's failing write-backs forever.
    limit = 2 * MiB
    p_be = MemBackend(key="p", write_unit=4 * MiB, write_delay=0.05)
    q_be = MemBackend(key="q", write_unit=4 * MiB, write_delay=0.05)
    p_data, q_data = pattern(MiB + 5, 46), pattern(8 * MiB, 47)

    async def body(cache, nursery):
        fp, _ = await cache.open(p_be)
        fq, _ = await cache.open(q_be)
        p_be.fail_write = errno.EDQUOT
        await cache.write(fp, 0, p_data)             # stored: p's writer is told later
        with pytest.raises(RadosFSError):
            await cache.flush(fp)
        with pytest.raises(RadosFSError):
            await cache.write(fp, len(p_data), b"x")  # its write-back failed: refused
        assert fp.size == len(p_data)                 # ... and it stored nothing
        with trio.fail_after(60):
            for off in range(0, len(q_data), 256 * KiB):
                await cache.write(fq, off, q_data[off:off + 256 * KiB])
            await cache.flush(fq)
        assert bytes(q_be.data) == q_data
        assert len([c for c in p_be.calls if c[0] == "write"]) <= 3
        p_be.fail_write = None
        try:
            await cache.flush(fp)
        except RadosFSError:
            await cache.flush(fp)
        assert bytes(p_be.data) == p_data

    run_cache(body, budget=16 * MiB, dirty_limit=limit)


def test_a_refused_write_leaves_no_trace():
    # The quota case: once a file's write-back fails, its writes get the errno and store
    # nothing; once the cluster takes data again, only what was accepted lands.
    be = MemBackend(key="nt", write_unit=MiB, write_delay=0.01)
    good = pattern(2 * MiB, 60)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.write(f, 0, good)
        be.fail_write = errno.EDQUOT
        await cache.write(f, 2 * MiB, pattern(MiB, 61))  # accepted: goes out, fails
        await trio.sleep(1)
        refused = 0
        for i in range(20):
            try:
                await cache.write(f, 3 * MiB + i * MiB, pattern(MiB, 62 + i))
            except RadosFSError as exc:
                assert exc.errno == errno.EDQUOT
                refused += 1
            await trio.sleep(0.3)
        assert refused == 20
        assert f.size == 3 * MiB
        writes = len([c for c in be.calls if c[0] == "write"])
        assert writes <= 3 * 8, writes  # 3 runs retried about once a second, not per write
        be.fail_write = None
        await trio.sleep(1.5)
        await cache.flush(f)       # (the refused writes reported the failure)
        assert len(be.data) == 3 * MiB
        assert bytes(be.data[:2 * MiB]) == good
        await cache.write(f, 3 * MiB, b"after")  # accepted again
        await cache.flush(f)
        assert bytes(be.data[3 * MiB:]) == b"after"

    run_cache(body, dirty_limit=64 * MiB)


def test_data_that_cannot_be_written_has_a_memory_cap(caplog):
    # Many files, each written and closed while the pool is over quota: their data stays
    # dirty (the closes got the error), but only up to the dirty limit; past it writers
    # get the errno instead of the cache growing. One log line per file, not per run.
    limit = 8 * MiB
    backends = [MemBackend(key=f"cap{i}", write_unit=4 * MiB, write_delay=0.01)
                for i in range(40)]

    async def body(cache, nursery):
        refused = 0
        peak = 0
        for i, be in enumerate(backends):
            be.fail_write = errno.EDQUOT
            f, _ = await cache.open(be)
            try:
                for off in range(0, 2 * MiB, 128 * KiB):
                    await cache.write(f, off, pattern(128 * KiB, i))
                    peak = max(peak, cache.dirty_bytes)
            except RadosFSError as exc:
                assert exc.errno == errno.EDQUOT
                refused += 1
            try:
                await cache.flush(f)
            except RadosFSError as exc:
                assert exc.errno == errno.EDQUOT
            peak = max(peak, cache.dirty_bytes)
        assert peak <= limit + 2 * MiB, peak
        assert refused >= 30
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) <= len(backends), len(errors)

    import logging
    caplog.set_level(logging.DEBUG)
    run_cache(body, budget=64 * MiB, dirty_limit=limit)


# ---- read-ahead --------------------------------------------------------------------------

def test_sequential_reads_prefetch_later_pages():
    content = pattern(40 * MiB, 27)
    be = MemBackend(content, key="ra", read_delay=0.01)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        st = ReadState()
        chunk = 128 * KiB
        pos = 0
        ahead = 0
        while pos < 16 * MiB:
            assert await cache.read(f, pos, chunk, st) == content[pos:pos + chunk]
            pos += chunk
            for off, _ in be.reads:
                ahead = max(ahead, off - pos)
            if pos == 2 * MiB:
                await trio.sleep(1)  # let prefetches land
                # the backend was asked for pages the reader has not reached
                assert any(off >= 3 * MiB for off, _ in be.reads)
        assert ahead >= 2 * MiB
        assert cache.stats["prefetched_pages"] > 0
        # prefetched pages are whole, aligned, and read once
        assert all(off % PAGE_SIZE == 0 for off, _ in be.reads)
        assert len(set(be.reads)) == len(be.reads)
        # the reader mostly found its pages ready
        assert cache.stats["hits"] > 10 * cache.stats["misses"]

    run_cache(body)


def test_failed_prefetch_of_a_page_written_meanwhile():
    # A prefetch fails after the page it was reading was written (and written back): the
    # page is dropped, its bytes leave the accounting, and a reader sees the written data.
    content = pattern(8 * MiB, 39)
    be = MemBackend(content, key="pf", write_unit=MiB, read_delay=1.0, write_delay=0.1)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        st = ReadState()
        assert await cache.read(f, 0, 128 * KiB, st) == content[:128 * KiB]
        be.fail_read = errno.EIO
        assert await cache.read(f, 128 * KiB, 128 * KiB, st) == content[128 * KiB:256 * KiB]
        assert cache.stats["prefetched_pages"] == 1 and 1 in f.pages
        new = pattern(MiB, 40)
        await cache.write(f, MiB, new)                # the whole page: written back at once
        await trio.sleep(0.5)
        assert be.writes == [(MiB, MiB)]
        await trio.sleep(1)                           # the prefetch has failed by now
        assert 1 not in f.pages
        check_invariants(cache)
        be.fail_read = None
        assert await cache.read(f, MiB, MiB) == new

    run_cache(body)


def test_random_reads_do_not_prefetch():
    content = pattern(40 * MiB, 28)
    be = MemBackend(content, key="rr", read_delay=0.01)
    rng = random.Random(29)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        st = ReadState()
        touched = set()
        last_end = 0
        for _ in range(60):
            while True:
                off = rng.randrange(0, 40 * MiB - 64 * KiB)
                if off != last_end:
                    break
            n = rng.randrange(4 * KiB, 64 * KiB)
            assert await cache.read(f, off, n, st) == content[off:off + n]
            touched.update(range(page_of(off), page_of(off + n - 1) + 1))
            last_end = off + n
            await trio.sleep(1)
        assert cache.stats["prefetched_pages"] == 0
        assert {page_of(off) for off, _ in be.reads} <= touched

    run_cache(body)


# ---- random and O_DIRECT access: no page filled for what no page holds -------------------

def test_small_random_reads_read_only_what_they_ask_for_once_the_pattern_shows():
    content = pattern(64 * MiB, 40)
    be = MemBackend(content, key="rnd", read_delay=0.01)
    rng = random.Random(41)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        st = ReadState()
        offsets = [rng.randrange(0, 64 * MiB // 4096) * 4096 + 4096 for _ in range(50)]
        for i, off in enumerate(offsets):
            assert await cache.read(f, off, 4096, st) == content[off:off + 4096]
            if i >= 1:  # from the second seek on: random access
                assert be.reads[-1] == (off, 4096)
        # the first seek filled its page; the 49 random reads after it filled none
        assert sum(n for _, n in be.reads) == PAGE_SIZE + 49 * 4096
        assert cache.stats["direct_reads"] == 49
        # sequential reads fill (and read ahead) again at once
        assert await cache.read(f, offsets[-1] + 4096, 128 * KiB, st) == \
            content[offsets[-1] + 4096:offsets[-1] + 4096 + 128 * KiB]
        assert be.reads[-1][1] == PAGE_SIZE or cache.stats["prefetched_pages"] > 0

    run_cache(body, budget=32 * MiB)  # a file of twice the cache: its pages would not stay


def test_small_random_reads_of_a_file_the_cache_can_hold_fill_pages():
    content = pattern(8 * MiB, 49)
    be = MemBackend(content, key="rnd-small")
    rng = random.Random(50)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        st = ReadState()
        for _ in range(200):
            off = rng.randrange(1, 8 * MiB // 4096) * 4096
            assert await cache.read(f, off, 4096, st) == content[off:off + 4096]
        # each page read once, whole; the rest were hits
        assert cache.stats["direct_reads"] == 0
        assert len(be.reads) <= 8 and all(n == PAGE_SIZE for _, n in be.reads)

    run_cache(body, budget=32 * MiB)


def test_direct_reads_see_written_bytes_not_yet_in_the_cluster_and_zeros_past_them():
    stored = pattern(3 * MiB, 42)
    be = MemBackend(stored, key="dr", write_delay=1.0)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        a = pattern(8 * KiB, 43)
        await cache.write(f, MiB + 4096, a)         # dirty, in a page never read
        await cache.write(f, 4 * MiB, b"x")        # past the stored end: a hole before it
        ref = bytearray(stored) + bytearray(MiB) + b"x"
        ref[MiB + 4096:MiB + 4096 + len(a)] = a
        assert await cache.read(f, MiB, 64 * KiB, direct=True) == ref[MiB:MiB + 64 * KiB]
        reads = len(be.reads)
        # no page there: straight from the backend, one read of just those bytes
        assert await cache.read(f, 2 * MiB + 5, 100, direct=True) == ref[2 * MiB + 5:
                                                                          2 * MiB + 105]
        assert be.reads[reads:] == [(2 * MiB + 5, 100)]
        # the written page, the hole and the tail: through the pages
        assert await cache.read(f, 4 * MiB - 10, 20, direct=True) == ref[4 * MiB - 10:]
        await cache.flush(f)
        assert bytes(be.data) == ref

    run_cache(body)


def test_direct_read_during_a_truncate_returns_nothing_past_the_new_end():
    stored = pattern(4 * MiB, 44)
    be = MemBackend(stored, key="dt", read_delay=1.0, write_delay=0.5)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        got = []

        async def reader():
            got.append(await cache.read(f, 3 * MiB, 64 * KiB, direct=True))

        nursery.start_soon(reader)
        await trio.sleep(0.1)
        await cache.truncate(f, 3 * MiB + 100)
        await trio.sleep(2)
        # read before or after the cut, never the bytes past it
        assert got == [stored[3 * MiB:3 * MiB + 100]] or got == [stored[3 * MiB:
                                                                         3 * MiB + 64 * KiB]]
        assert await cache.read(f, 3 * MiB, 64 * KiB, direct=True) == \
            stored[3 * MiB:3 * MiB + 100]

    run_cache(body)


def test_direct_writes_go_straight_to_an_in_place_backend_and_no_stale_page_stays():
    stored = pattern(4 * MiB, 45)
    be = MemBackend(stored, key="dw", read_delay=0.5, write_delay=1.0, writes_in_place=True)

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        ref = bytearray(stored)
        # a buffered reader fills page 2 while a direct write into it is in flight
        a = pattern(4096, 46)
        got = []

        async def reader():
            got.append(await cache.read(f, 2 * MiB, MiB))

        async def writer():
            assert await cache.write_direct(f, 2 * MiB + 8192, a) == len(a)

        nursery.start_soon(writer)
        await trio.sleep(0.01)
        nursery.start_soon(reader)  # its read-in starts and ends while the write is out
        await trio.sleep(0.1)
        assert f.dirty  # in flight: flush and truncate wait for it
        await cache.flush(f)
        ref[2 * MiB + 8192:2 * MiB + 8192 + len(a)] = a
        assert bytes(be.data) == ref
        assert be.writes == [(2 * MiB + 8192, 4096)]
        await trio.sleep(2)
        assert got and cache.stats["direct_writes"] == 1
        # whatever the reader got, the page it left (if any) is not the old bytes
        assert await cache.read(f, 2 * MiB, MiB) == ref[2 * MiB:3 * MiB]
        # a page that is cached takes the write itself (it may hold newer bytes)
        b = pattern(4096, 47)
        assert await cache.write_direct(f, 2 * MiB, b) == len(b)
        ref[2 * MiB:2 * MiB + len(b)] = b
        assert be.writes[-1] == (2 * MiB + 8192, 4096) and f.dirty_pages == {2}
        # past the end: the file grows
        assert await cache.write_direct(f, 5 * MiB, b) == len(b)
        ref.extend(bytes(5 * MiB - len(ref)))
        ref.extend(b)
        assert f.size == 5 * MiB + len(b)
        await cache.flush(f)
        assert bytes(be.data) == ref
        assert await cache.read(f, 0, f.size) == ref
        assert cache.stats["direct_writes"] == 2

    run_cache(body)


def test_direct_writes_to_a_backend_that_plans_its_layout_go_through_the_pages():
    be = MemBackend(pattern(MiB, 48), key="dp")

    async def body(cache, nursery):
        f, _ = await cache.open(be)
        await cache.write_direct(f, 4096, b"y" * 4096)
        assert cache.stats["direct_writes"] == 0 and f.dirty_pages == {0}
        await cache.flush(f)
        assert be.planned  # write-back asked the backend first

    run_cache(body)


# ---- open / keep_cache -------------------------------------------------------------------

def test_open_keeps_pages_when_version_unchanged_and_drops_them_otherwise():
    stored = pattern(3 * MiB, 30)
    be = MemBackend(stored, key="v")

    async def body(cache, nursery):
        f, keep = await cache.open(be)
        assert keep is False                      # nothing cached yet
        assert await cache.read(f, 0, 3 * MiB) == stored
        reads = len(be.reads)
        await cache.release(f)

        f2, keep = await cache.open(be)
        assert keep is True and f2 is f
        assert sorted(f.pages) == [0, 1, 2]
        assert await cache.read(f2, 0, 3 * MiB) == stored
        assert len(be.reads) == reads            # served from the cache
        await cache.release(f2)

        # our own write + flush does not count as a change
        f3, keep = await cache.open(be)
        await cache.write(f3, 10, b"ours")
        await cache.flush(f3)
        await cache.release(f3)
        f4, keep = await cache.open(be)
        assert keep is True and sorted(f4.pages) == [0, 1, 2]
        await cache.release(f4)

        # another client changes the object (and its size)
        new = pattern(MiB + 7, 31)
        be.data = bytearray()
        be.store(0, new)
        f5, keep = await cache.open(be)
        assert keep is False
        assert not f5.pages and cache.total_bytes == 0
        assert f5.size == len(new)
        assert await cache.read(f5, 0, 3 * MiB) == new
        check_invariants(cache)

    run_cache(body)


def test_backend_can_hold_back_background_writeback_but_not_flush():
    """plan_writeback False: write-behind waits (a new file may still choose its layout),
    back-pressure and flush still write everything."""
    async def main():
        cache = PageCache(budget=256 * MiB)
        be = MemBackend(key="hold", write_unit=MiB)
        be.hold_back = True
        async with trio.open_nursery() as nursery:
            cache.nursery = nursery
            f, _ = await cache.open(be)
            for i in range(8):
                await cache.write(f, i * MiB, bytes([i]) * MiB)
            await trio.sleep(1)
            assert be.writes == [], "held back, yet written behind"
            assert be.planned and be.planned[-1] == (8 * MiB, 0)
            await cache.flush(f)
            assert bytes(be.data) == b"".join(bytes([i]) * MiB for i in range(8))
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_dirty_data_of_an_open_file_is_written_after_the_expiry():
    """Data that sits dirty (a small append, a held-back new file) reaches the backend
    within DIRTY_EXPIRE seconds without fsync or close; before that it does not."""
    from radosfs.cache import DIRTY_EXPIRE

    async def main():
        cache = PageCache(budget=64 * MiB)
        be = MemBackend(key="log", write_unit=4 * MiB)
        be.hold_back = True
        async with trio.open_nursery() as nursery:
            cache.nursery = nursery
            nursery.start_soon(cache.expire_dirty)
            f, _ = await cache.open(be)
            await cache.write(f, 0, b"line 1\n")
            await trio.sleep(DIRTY_EXPIRE / 2)
            assert be.writes == []
            await trio.sleep(DIRTY_EXPIRE)
            assert bytes(be.data) == b"line 1\n" and cache.dirty_bytes == 0
            nursery.cancel_scope.cancel()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
