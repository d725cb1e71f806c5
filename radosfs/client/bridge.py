"""The librados/librbd-to-trio bridge.

Two ways into the cluster, neither of which blocks the trio event loop:

* `Bridge.aio(submit, nbytes)` for librados/librbd asynchronous calls. The completion
  callback runs on a librados finisher thread; it hands the result to the loop through the
  trio token and wakes the awaiting task. No thread is parked per request.
* `Bridge.run(fn, *args)` for calls that have no asynchronous form (listing, xattrs,
  truncate, mon commands). They run in a worker thread (the bindings release the GIL),
  bounded by a capacity limiter.

librados' own throttle (`objecter_inflight_ops` 1024, `objecter_inflight_op_bytes`
100 MiB) makes the *submit* call block when exceeded, which would stall the loop. We keep
our own, lower bound on operations and bytes in flight so that never happens.
"""
from __future__ import annotations

import errno
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, TypeVar

import trio

from ..errors import RadosFSError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Below librados' objecter limits (1024 ops, 100 MiB), leaving room for the threads.
MAX_OPS_IN_FLIGHT = 512
MAX_BYTES_IN_FLIGHT = 64 << 20
# Small calls submitted together by aio_many (listings): well below objecter_inflight_ops.
MAX_BATCH = 256


class Throttle:
    """Bounds operations and bytes in flight; waiters queue fairly."""

    def __init__(self, max_ops: int, max_bytes: int) -> None:
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.ops = 0
        self.bytes = 0
        self._lot = trio.lowlevel.ParkingLot()

    def _fits(self, nbytes: int) -> bool:
        if self.ops >= self.max_ops:
            return False
        # One request larger than the byte budget may still go alone.
        return self.bytes == 0 or self.bytes + nbytes <= self.max_bytes

    async def acquire(self, nbytes: int, ops: int = 1) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._fits(nbytes):
            await self._lot.park()
        self.ops += ops
        self.bytes += nbytes

    def release(self, nbytes: int, ops: int = 1) -> None:
        self.ops -= ops
        self.bytes -= nbytes
        self._lot.unpark_all()


class Bridge:
    """Runs librados/librbd calls for the trio loop. Create inside the running loop."""

    def __init__(self, max_ops: int = MAX_OPS_IN_FLIGHT, max_bytes: int = MAX_BYTES_IN_FLIGHT,
                 max_threads: int = 16) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.throttle = Throttle(max_ops, max_bytes)
        self.limiter = trio.CapacityLimiter(max_threads)
        self.stats = {"aio_ops": 0, "thread_calls": 0, "errors": 0}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking binding call in a worker thread."""
        self.stats["thread_calls"] += 1
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter,
                                                 abandon_on_cancel=False)
        except Exception:
            self.stats["errors"] += 1
            raise

    async def aio(self, submit: Callable[[Callable[..., None]], Any], nbytes: int = 0,
                  with_length: bool = False) -> tuple:
        """Submit one asynchronous call and wait for its completion.

        `submit(oncomplete)` must start the call and arrange for `oncomplete(comp, *result)`
        to be called when it finishes (the bindings' own callback signature). Returns the
        extra callback arguments, e.g. `(data,)` for aio_read. Raises `RadosFSError` with
        the errno when the return value is negative.

        With `with_length`, returns `(rv, *extra)`: the completion's non-negative return
        value first. Reads must use it: python-rados and python-rbd hand a read that
        returned 0 (at or past the end) a buffer of the full requested length with
        uninitialized contents; only the first `rv` bytes were read (`read_buffer`).
        """
        await self.throttle.acquire(nbytes)
        done = trio.Event()
        box: list[Any] = []

        def finish(result: tuple) -> None:
            # On the trio thread: release the budget even if the waiter was cancelled.
            self.throttle.release(nbytes)
            box.append(result)
            done.set()

        def oncomplete(comp: Any, *rest: Any) -> None:
            # On a librados/librbd thread: never touch trio state here.
            rv = comp.get_return_value()
            self.token.run_sync_soon(finish, (rv, rest))

        self.stats["aio_ops"] += 1
        try:
            submit(oncomplete)
        except Exception:
            self.throttle.release(nbytes)
            self.stats["errors"] += 1
            raise
        await done.wait()
        rv, rest = box[0]
        rest = self._result(rv, rest)
        return (rv, *rest) if with_length else rest

    def _result(self, rv: Any, rest: tuple) -> tuple:
        if isinstance(rv, int) and rv < 0:
            if rv != -errno.ENOENT:  # lookups of names that don't exist are normal
                self.stats["errors"] += 1
            raise RadosFSError(-rv, f"librados returned {-rv}")
        return rest


    async def aio_many(self, submits: list[Callable[[Callable[..., None]], Any]]
                       ) -> list[tuple | BaseException]:
        """Many small asynchronous calls (e.g. a listing's stats) with one wake-up.

        The completions count down on librados' threads and only the last one hands
        control back to the loop: no trio task or event per call. Each result is the
        extra callback arguments, or the RadosFSError the call failed with.
        """
        results: list[Any] = []
        for start in range(0, len(submits), MAX_BATCH):
            results.extend(await self._aio_batch(submits[start:start + MAX_BATCH]))
        return results

    async def _aio_batch(self, submits: list[Callable[[Callable[..., None]], Any]]) -> list:
        n = len(submits)
        if not n:
            return []
        await self.throttle.acquire(0, ops=n)
        raw: list[Any] = [None] * n
        left = [n]
        lock = threading.Lock()
        done = trio.Event()

        def finish() -> None:
            self.throttle.release(0, ops=n)
            done.set()

        def count_down(k: int) -> None:
            with lock:
                left[0] -= k
                last = left[0] == 0
            if last:
                self.token.run_sync_soon(finish)

        def make_cb(i: int) -> Callable[..., None]:
            def oncomplete(comp: Any, *rest: Any) -> None:
                raw[i] = (comp.get_return_value(), rest)
                count_down(1)
            return oncomplete

        self.stats["aio_ops"] += n
        for i, submit in enumerate(submits):
            try:
                submit(make_cb(i))
            except Exception as exc:  # noqa: BLE001 -- reported as that call's result
                raw[i] = exc
                count_down(1)
        await done.wait()
        out: list[tuple | BaseException] = []
        for item in raw:
            if isinstance(item, BaseException):
                out.append(item)
                continue
            try:
                out.append(self._result(*item))
            except RadosFSError as exc:
                out.append(exc)
        return out


def first_error(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def concurrently() -> AsyncIterator[trio.Nursery]:
    """A nursery that fails with the first error itself, not an ExceptionGroup, so callers
    catch RadosFSError(ENOENT) and friends just as they would from a plain await."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def read_buffer(rv: Any, data: Any) -> bytes:
    """The bytes an asynchronous read really returned: the first `rv` of the buffer.

    The bindings only shrink the buffer when 0 < rv < length; at rv == 0 they pass the
    whole uninitialized buffer. Never trust the buffer's length."""
    if not data or not isinstance(rv, int) or rv <= 0:
        return b""
    return bytes(data[:rv]) if len(data) > rv else data
