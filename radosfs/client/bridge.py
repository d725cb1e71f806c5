"""The librados/librbd-to-trio bridge: the one place where radosfs waits for the cluster.

Two ways into the cluster, neither of which blocks the trio event loop:

* `Bridge.aio(submit, nbytes)` for librados/librbd asynchronous calls. The completion
  callback runs on a librados finisher thread; it hands the result to the loop through the
  trio token and wakes the awaiting task. No thread is parked per request.
* `Bridge.run(fn, *args)` for calls that have no asynchronous form (listing, xattrs,
  truncate, mon commands). They run in a worker thread (the bindings release the GIL),
  bounded by a capacity limiter.

**No call waits forever.** librados' own timeouts (`rados_osd_op_timeout`,
`rados_mon_op_timeout`, set from `op_timeout` by connection.py) do not bound everything:
`Rados.wait_for_latest_osdmap` (also called inside a pool lookup of a name the client does
not know) waits for the monitors however long they are gone, and librbd's state machines
may retry. So every call is bounded here as well, by `op_timeout`:

* past the deadline the caller gets `RadosFSError(ETIMEDOUT)` naming the call (the FUSE
  request fails with EIO, errors.to_errno logs the line);
* a worker thread still inside the binding is *abandoned*, not waited for: its limiter
  slot is given back at once (a stuck call must not starve the others), and the thread
  ends on its own whenever librados returns;
* an asynchronous call whose completion has not come is left to librados: its budget in
  the throttle stays taken until the completion arrives (librados still holds the op) and
  is released exactly once then; what `submit` refers to (e.g. the buffer librbd writes
  from without copying) is kept alive until the completion, through the callback the
  binding holds.

librados' own throttle (`objecter_inflight_ops` 1024, `objecter_inflight_op_bytes`
100 MiB) makes the *submit* call block when exceeded, which would stall the loop. We keep
our own, lower bound on operations and bytes in flight so that never happens.
"""
from __future__ import annotations

import builtins
import errno
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Hashable, TypeVar

import outcome
import trio

from ..errors import RadosFSError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Below librados' objecter limits (1024 ops, 100 MiB), leaving room for the threads.
MAX_OPS_IN_FLIGHT = 512
MAX_BYTES_IN_FLIGHT = 64 << 20
# Small calls submitted together by aio_many (listings): well below objecter_inflight_ops.
MAX_BATCH = 256
# Abandoned worker threads still inside librados: past this many, new blocking calls fail
# at once instead of starting yet another thread that would get stuck the same way.
MAX_ABANDONED = 256


def call_name(fn: Any) -> str:
    """A readable name for a binding call, for log lines: `Rados.wait_for_latest_osdmap`,
    `StripedData.remove (aio_remove)` for a lambda that calls `aio_remove`."""
    fn = getattr(fn, "func", fn)  # functools.partial
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    name = name.replace(".<locals>", "")
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_name == "<lambda>":
        called = [n for n in code.co_names if "aio" in n] or \
                 [n for n in code.co_names if not hasattr(builtins, n)]
        name = name.removesuffix(".<lambda>")
        if called:
            name = f"{name} ({called[-1] if 'aio' in called[-1] else '.'.join(called)})"
    return name


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

    def try_acquire(self, nbytes: int, ops: int = 1) -> bool:
        """Take the budget if it is free now (no wait, no checkpoint)."""
        if not self._fits(nbytes):
            return False
        self.ops += ops
        self.bytes += nbytes
        return True

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


class _Slot:
    """A CapacityLimiter-like object for one worker-thread call (trio.to_thread accepts
    any object with these two methods): it holds one slot of the shared limiter and can
    give it back early, when the call is abandoned, instead of when the thread ends."""

    __slots__ = ("bridge", "borrower", "held", "abandoned", "what", "since")

    def __init__(self, bridge: Bridge, what: str) -> None:
        self.bridge = bridge
        self.borrower: object = None
        self.held = False
        self.abandoned = False
        self.what = what
        self.since = 0.0

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self.bridge.limiter.acquire_on_behalf_of(borrower)
        self.borrower = borrower
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.bridge.limiter.release_on_behalf_of(self.borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        # Called by trio (on the loop) when the thread has returned.
        self.give_back()
        if self.abandoned:
            self.abandoned = False
            self.bridge.abandoned -= 1
            log.info("%s returned %.0fs after it was abandoned", self.what,
                     trio.current_time() - self.since)


class _Shared:
    """One blocking call that several callers wait for (see Bridge.run_shared)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = trio.Event()
        self.result: outcome.Outcome | None = None


class Bridge:
    """Runs librados/librbd calls for the trio loop. Create inside the running loop.

    `op_timeout` (+ `grace`) bounds every call (None: no bound of our own, only
    librados'); a call may be given its own `timeout=` instead.
    """

    def __init__(self, max_ops: int = MAX_OPS_IN_FLIGHT, max_bytes: int = MAX_BYTES_IN_FLIGHT,
                 max_threads: int = 16, op_timeout: float | None = None,
                 grace: float = 0.0) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.throttle = Throttle(max_ops, max_bytes)
        self.limiter = trio.CapacityLimiter(max_threads)
        # The deadline is op_timeout + grace: with librados' own timeouts set to op_timeout
        # they normally answer first, so only calls librados does not bound are abandoned.
        self.op_timeout = op_timeout + grace if op_timeout is not None else None
        self.cluster_timeout = op_timeout
        self.abandoned = 0          # worker threads given up on and not returned yet
        self._shared: dict[Hashable, _Shared] = {}
        self.stats = {"aio_ops": 0, "thread_calls": 0, "errors": 0, "timeouts": 0,
                      "abandoned_threads": 0, "late_completions": 0}

    @property
    def stuck(self) -> int:
        """Calls still inside librados that nobody waits for any more."""
        return self.abandoned + sum(1 for c in self._shared.values()
                                    if trio.current_time() - c.started > (self.op_timeout or 0))

    # ---- deadlines -------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        limit = self.op_timeout if timeout is None else timeout
        return trio.current_time() + limit if limit is not None else float("inf")

    def _timed_out(self, what: str, limit: float | None, detail: str) -> RadosFSError:
        self.stats["timeouts"] += 1
        self.stats["errors"] += 1
        shown = f"{limit:g}s" if limit is not None else "its deadline"
        return RadosFSError(errno.ETIMEDOUT, f"{what} did not return within {shown} "
                                             f"(op_timeout); {detail}")

    # ---- blocking calls --------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None,
                  what: str | None = None) -> T:
        """Run a blocking binding call in a worker thread, bounded by op_timeout (or
        `timeout`); past it the thread is abandoned and RadosFSError(ETIMEDOUT) raised."""
        self.stats["thread_calls"] += 1
        name = what or call_name(fn)
        limit = self.op_timeout if timeout is None else timeout
        if self.abandoned >= MAX_ABANDONED:
            raise self._timed_out(name, limit, f"not started: {self.abandoned} earlier "
                                  f"calls are still stuck in librados")
        slot = _Slot(self, name)
        finished = False
        detail = "no worker thread was free in time"
        try:
            with trio.move_on_at(self._deadline(timeout)):
                result = await trio.to_thread.run_sync(fn, *args, limiter=slot,
                                                       abandon_on_cancel=True)
                finished = True
                return result
        except Exception:
            finished = True
            self.stats["errors"] += 1
            raise
        finally:
            if not finished and slot.held:
                # Abandoned (our deadline, or the caller was cancelled): the thread goes on
                # in librados; its slot is free for others from now on.
                detail = "its worker thread was abandoned"
                slot.give_back()
                slot.abandoned = True
                slot.since = trio.current_time()
                self.abandoned += 1
                self.stats["abandoned_threads"] += 1
        raise self._timed_out(name, limit, detail)

    async def run_shared(self, key: Hashable, fn: Callable[[], Any], *,
                         timeout: float | None = None, what: str | None = None) -> Any:
        """A blocking call that concurrent callers share (single flight): one thread runs
        `fn()`, everyone asking for `key` meanwhile waits for that same call.

        The deadline counts from when the shared call started, so while it is stuck
        (e.g. waiting for monitors that are down) later callers fail at once instead of
        each waiting op_timeout again; the next call after it returns starts afresh.
        """
        name = what or call_name(fn)
        limit = self.op_timeout if timeout is None else timeout
        call = self._shared.get(key)
        if call is None:
            call = self._shared[key] = _Shared(trio.current_time())
            token = self.token

            def deliver(result: outcome.Outcome) -> None:
                call.result = result
                if self._shared.get(key) is call:
                    del self._shared[key]
                call.done.set()

            def work() -> None:
                result = outcome.capture(fn)
                try:
                    token.run_sync_soon(deliver, result)
                except trio.RunFinishedError:
                    pass

            self.stats["thread_calls"] += 1
            trio.lowlevel.start_thread_soon(work, lambda _: None, name=f"radosfs {name}")
        deadline = call.started + limit if limit is not None else float("inf")
        with trio.move_on_at(deadline):
            await call.done.wait()
        if call.result is None:
            raise self._timed_out(name, limit, "still waiting for it in the background")
        # Every sharer gets the result (Outcome.unwrap may be called only once).
        if isinstance(call.result, outcome.Error):
            raise call.result.error
        return call.result.value

    # ---- asynchronous calls ----------------------------------------------------------

    async def aio(self, submit: Callable[[Callable[..., None]], Any], nbytes: int = 0,
                  with_length: bool = False, *, timeout: float | None = None,
                  what: str | None = None) -> tuple:
        """Submit one asynchronous call and wait for its completion (bounded by op_timeout
        or `timeout`).

        `submit(oncomplete)` must start the call and arrange for `oncomplete(comp, *result)`
        to be called when it finishes (the bindings' own callback signature). Returns the
        extra callback arguments, e.g. `(data,)` for aio_read. Raises `RadosFSError` with
        the errno when the return value is negative, ETIMEDOUT past the deadline.

        With `with_length`, returns `(rv, *extra)`: the completion's non-negative return
        value first. Reads must use it: python-rados and python-rbd hand a read that
        returned 0 (at or past the end) a buffer of the full requested length with
        uninitialized contents; only the first `rv` bytes were read (`read_buffer`).
        """
        deadline = self._deadline(timeout)
        done = trio.Event()
        box: list[Any] = []
        # The usual case: room at once, no cancel scope (waiting for the completion below
        # is the checkpoint).
        if not self.throttle.try_acquire(nbytes):
            with trio.move_on_at(deadline) as scope:
                await self.throttle.acquire(nbytes)
            if scope.cancelled_caught:  # nothing taken, nothing submitted
                raise self._timed_out(what or call_name(submit),
                                      self.op_timeout if timeout is None else timeout,
                                      "not submitted: too much already in flight")
        waiting = [True]

        def finish(result: tuple) -> None:
            # On the trio thread, once per completion: release the budget even if the
            # waiter gave up or was cancelled.
            self.throttle.release(nbytes)
            if not waiting[0]:
                self.stats["late_completions"] += 1
            box.append(result)
            done.set()

        def oncomplete(comp: Any, *rest: Any) -> None:
            # On a librados/librbd thread: never touch trio state here. `submit` is named
            # so that what it refers to (buffers) lives until the completion.
            rv = comp.get_return_value()
            keep_alive = submit  # noqa: F841
            try:
                self.token.run_sync_soon(finish, (rv, rest))
            except trio.RunFinishedError:
                pass

        self.stats["aio_ops"] += 1
        try:
            submit(oncomplete)
        except Exception:
            self.throttle.release(nbytes)
            self.stats["errors"] += 1
            raise
        try:
            with trio.move_on_at(deadline):
                await done.wait()
        finally:
            waiting[0] = False
        if not box:
            raise self._timed_out(what or call_name(submit),
                                  self.op_timeout if timeout is None else timeout,
                                  "its completion is left to librados")
        rv, rest = box[0]
        rest = self._result(rv, rest, submit)
        return (rv, *rest) if with_length else rest

    def _result(self, rv: Any, rest: tuple, submit: Any = None) -> tuple:
        if isinstance(rv, int) and rv < 0:
            if rv != -errno.ENOENT:  # lookups of names that don't exist are normal
                self.stats["errors"] += 1
            code = errno.errorcode.get(-rv, str(-rv))
            raise RadosFSError(-rv, f"{call_name(submit)} returned {code}"
                               if submit is not None and rv != -errno.ENOENT
                               else f"librados returned {code}")
        return rest

    async def aio_many(self, submits: list[Callable[[Callable[..., None]], Any]], *,
                       timeout: float | None = None, with_length: bool = False
                       ) -> list[tuple | BaseException]:
        """Many small asynchronous calls (e.g. a listing's stats) with one wake-up.

        The completions count down on librados' threads and only the last one hands
        control back to the loop: no trio task or event per call. Each result is the
        extra callback arguments, or the RadosFSError the call failed with (ETIMEDOUT for
        those not answered within op_timeout, or `timeout`, per batch). `with_length` as
        for `aio`: each result starts with the completion's return value (reads).
        """
        results: list[Any] = []
        for start in range(0, len(submits), MAX_BATCH):
            results.extend(await self._aio_batch(submits[start:start + MAX_BATCH], timeout,
                                                 with_length))
        return results

    async def _aio_batch(self, submits: list[Callable[[Callable[..., None]], Any]],
                         timeout: float | None, with_length: bool = False) -> list:
        n = len(submits)
        if not n:
            return []
        deadline = self._deadline(timeout)
        limit = self.op_timeout if timeout is None else timeout
        with trio.move_on_at(deadline) as scope:
            await self.throttle.acquire(0, ops=n)
        if scope.cancelled_caught:  # nothing taken, nothing submitted
            err = self._timed_out(call_name(submits[0]), limit,
                                  "not submitted: too much already in flight")
            return [err] * n
        raw: list[Any] = [None] * n
        left = [n]
        lock = threading.Lock()
        done = trio.Event()

        def finish() -> None:
            # Once, when the last completion came (even after the waiter gave up).
            self.throttle.release(0, ops=n)
            done.set()

        def count_down(k: int) -> None:
            with lock:
                left[0] -= k
                last = left[0] == 0
            if last:
                try:
                    self.token.run_sync_soon(finish)
                except trio.RunFinishedError:
                    pass

        def make_cb(i: int, submit: Callable) -> Callable[..., None]:
            def oncomplete(comp: Any, *rest: Any) -> None:
                keep_alive = submit  # noqa: F841 -- what it refers to lives until now
                raw[i] = (comp.get_return_value(), rest)
                count_down(1)
            return oncomplete

        self.stats["aio_ops"] += n
        for i, submit in enumerate(submits):
            try:
                submit(make_cb(i, submit))
            except Exception as exc:  # noqa: BLE001 -- reported as that call's result
                raw[i] = exc
                count_down(1)
        with trio.move_on_at(deadline):
            await done.wait()
        out: list[tuple | BaseException] = []
        late = None
        for i, item in enumerate(list(raw)):
            if item is None:  # not answered in time: left to librados
                late = late or self._timed_out(call_name(submits[i]), limit,
                                               "its completion is left to librados")
                out.append(late)
                continue
            if isinstance(item, BaseException):
                out.append(item)
                continue
            try:
                rest = self._result(*item, submits[i])
                out.append((item[0], *rest) if with_length else rest)
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
