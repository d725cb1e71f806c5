"""A single RADOS object as a cache backend, through librados' asynchronous calls."""
from __future__ import annotations

import errno
import itertools
import time
from typing import Any, AsyncIterator, Callable

import rados
import trio

from ..client.bridge import Bridge, read_buffer
from ..errors import RadosFSError, errno_of

# No single write above osd_max_write_size (90 MB); 8 MiB keeps many in flight.
MAX_IO = 8 << 20
# RADOS refuses objects past osd_max_object_size (128 MiB by default).
OSD_MAX_OBJECT_SIZE = 128 << 20
LIST_CHUNK = 1000          # objects pulled from a pool listing per thread hop


def struct_to_epoch(t: time.struct_time | None) -> float:
    """aio_stat/stat give a local struct_time; turn it back into seconds since the epoch."""
    return time.mktime(t) if t is not None else 0.0


async def stat_object(bridge: Bridge, ioctx: rados.Ioctx, name: str) -> tuple[int, float]:
    """(size, mtime) of one object; raises RadosFSError(ENOENT) if it does not exist."""
    size, mtime = await bridge.aio(lambda cb: ioctx.aio_stat(name, cb))
    if size is None:
        raise RadosFSError(errno.ENOENT, f"no object {name}")
    return size, struct_to_epoch(mtime)


async def read_object(bridge: Bridge, ioctx: rados.Ioctx, name: str, offset: int,
                      length: int) -> bytes:
    """Read [offset, offset+length) in pieces of at most MAX_IO; short at end of object.

    Only the completion's return value says how much was read (see `read_buffer`)."""
    async def once(o: int, n: int) -> bytes:
        rv, data = await bridge.aio(lambda cb: ioctx.aio_read(name, n, o, cb), n,
                                    with_length=True)
        return read_buffer(rv, data)
    return await read_in_pieces(once, offset, length)


def stat_submit(ioctx: rados.Ioctx, name: str) -> Callable[[Callable[..., None]], Any]:
    """One aio_stat for `Bridge.aio_many`."""
    return lambda cb: ioctx.aio_stat(name, cb)


def stat_answer(res: tuple | BaseException) -> tuple[int, float] | None:
    """One aio_stat's result from `Bridge.aio_many` (without `with_length`): (size, mtime),
    or None if the object does not exist; any other error is raised."""
    if isinstance(res, BaseException):
        if errno_of(res) != errno.ENOENT:
            raise res
        return None
    size, mtime = res
    return None if size is None else (size, struct_to_epoch(mtime))


async def stat_many_and_read(bridge: Bridge, ioctx: rados.Ioctx, names: tuple[str, ...],
                             length: int
                             ) -> tuple[dict[str, tuple[int, float] | None], bytes | None]:
    """Stats of `names` and (`length` > 0) a read of the first `length` bytes of the first
    of them, sent together with one wake-up for all (a lookup: no trio task per call).

    Returns ({name: (size, mtime), or None if it does not exist}, the bytes read, or None
    if the read failed: ENOENT, or whatever the stat of the same object reports). Any
    error of a stat other than ENOENT is raised. Only the read's return value says how
    much was read (see `read_buffer`)."""
    submits = [stat_submit(ioctx, o) for o in names]
    if length > 0:
        submits.append(lambda cb: ioctx.aio_read(names[0], length, 0, cb))
    results = await bridge.aio_many(submits, with_length=True)
    found = {o: stat_answer(st if isinstance(st, BaseException) else st[1:])
             for o, st in zip(names, results)}
    data = None
    if length > 0 and not isinstance(results[-1], BaseException):
        rv, buf = results[-1]
        data = read_buffer(rv, buf)
    return found, data


async def read_in_pieces(read_once, offset: int, length: int) -> bytes:
    """Split a read into requests of at most MAX_IO (under osd_max_write_size and the
    in-flight budget); stop at the first short piece (end of object or image)."""
    if length <= MAX_IO:
        return await read_once(offset, length) if length > 0 else b""
    parts = []
    while length > 0:
        n = min(length, MAX_IO)
        data = await read_once(offset, n)
        parts.append(data)
        if len(data) < n:
            break
        offset += n
        length -= n
    return b"".join(parts)


async def write_object(bridge: Bridge, ioctx: rados.Ioctx, name: str, offset: int,
                       data: bytes) -> None:
    """Write in place in pieces of at most MAX_IO (aio_write stamps the mtime as now)."""
    if offset + len(data) > OSD_MAX_OBJECT_SIZE:
        raise RadosFSError(errno.EFBIG, f"{name}: past osd_max_object_size")
    if len(data) <= MAX_IO:  # the usual case: no copy
        await bridge.aio(lambda cb: ioctx.aio_write(name, data, offset, cb), len(data))
        return
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        chunk = bytes(view[pos:pos + MAX_IO])
        await bridge.aio(lambda cb, c=chunk, o=offset + pos: ioctx.aio_write(name, c, o, cb),
                         len(chunk))
        pos += len(chunk)


async def write_stamped(bridge: Bridge, ioctx: rados.Ioctx, name: str, offset: int,
                        data: bytes) -> int:
    """One write of at most MAX_IO in place, in a write op that stores an mtime of our
    choosing; returns that mtime (whole seconds), so the caller knows the object's
    version without a stat (see ObjectBackend.version)."""
    if offset + len(data) > OSD_MAX_OBJECT_SIZE:
        raise RadosFSError(errno.EFBIG, f"{name}: past osd_max_object_size")
    return await operate_aio(bridge, ioctx, name, lambda op: op.write(data, offset),
                             nbytes=len(data))


def stamp_mtime(op: rados.WriteOp) -> None:
    """A step that changes nothing but the object's mtime (to the op's), creating it if
    missing: an idempotent create. Not a zero-length write at 0: an erasure-coded pool
    without overwrites refuses every write that does not append (EOPNOTSUPP)."""
    op.new(rados.LIBRADOS_CREATE_IDEMPOTENT)


async def truncate_object(bridge: Bridge, ioctx: rados.Ioctx, oid: str, size: int) -> None:
    """Cut or extend one object to `size`. An erasure-coded pool without overwrites refuses
    truncate (EOPNOTSUPP) but takes a whole-object write: truncating to 0 -- every
    `O_TRUNC` open, `cp` over a file, `>` -- is then a write_full of nothing, which keeps
    xattrs and omap as truncate does. (python-rados has no assert_exists for it: an object
    removed by another client in between comes back empty.)"""
    try:
        await bridge.run(ioctx.trunc, oid, size)
    except Exception as exc:  # python-rados' errors are not OSError
        if size != 0 or errno_of(exc) != errno.EOPNOTSUPP:
            raise
        await bridge.run(operate, ioctx, oid, lambda op: op.write_full(b""))


def operate(ioctx: rados.Ioctx, oid: str, build, mtime: float | None = None) -> None:
    """Run one compound write op (blocking; call through Bridge.run).

    `build(op)` adds the steps. The mtime is always given: librados would store 1970.
    """
    op = ioctx.create_write_op()
    try:
        build(op)
        ioctx.operate_write_op(op, oid, mtime=int(mtime if mtime is not None else time.time()))
    finally:
        ioctx.release_write_op(op)


async def operate_aio(bridge: Bridge, ioctx: rados.Ioctx, oid: str, build,
                      mtime: int | None = None, nbytes: int = 0) -> int:
    """`operate` asynchronously (no worker thread); returns the mtime stored (whole
    seconds, always given: librados would store 1970)."""
    stamp = int(mtime if mtime is not None else time.time())
    op = ioctx.create_write_op()
    try:
        build(op)
        await bridge.aio(lambda cb: ioctx.operate_aio_write_op(op, oid, cb, mtime=stamp),
                         nbytes)
    finally:
        ioctx.release_write_op(op)
    return stamp


async def create_object(bridge: Bridge, io: rados.Ioctx, oid: str,
                        xattrs: dict[str, bytes] | None = None, data: bytes = b"") -> int:
    """Exclusive create (EEXIST if it exists), asynchronously, with `xattrs` and `data` set
    in the same operation; returns the mtime stored.

    The mtime is always given: operate_write_op would store 1970 without one.
    """
    mtime = int(time.time())
    op = io.create_write_op()
    try:
        op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
        if data:
            op.write_full(data)
        for key, value in (xattrs or {}).items():
            op.set_xattr(key, value)
        await bridge.aio(lambda cb: io.operate_aio_write_op(op, oid, cb, mtime=mtime))
    finally:
        io.release_write_op(op)
    return mtime


async def list_names(bridge: Bridge, io: rados.Ioctx, chunk: int = LIST_CHUNK
                     ) -> AsyncIterator[list[str]]:
    """The names of a pool's objects, `chunk` at a time, each chunk one bounded call
    (what the striper uses to find a file's pieces; directory listings use the checked
    listing of client/listing.py, which reports every error).

    The binding's ObjectIterator ends the listing on *any* error (ETIMEDOUT when the OSDs
    do not answer, EPERM): a failed listing looks complete. It fails only by timing out
    or at once (caps), so a chunk that comes back short after about librados' op timeout
    is reported as ETIMEDOUT instead of as the end of the pool.
    """
    it = await bridge.run(io.list_objects)
    limit = bridge.cluster_timeout
    while True:
        started = trio.current_time()
        names = await bridge.run(lambda: [o.key for o in itertools.islice(it, chunk)],
                                 what="Ioctx.list_objects")
        took = trio.current_time() - started
        if len(names) < chunk and limit is not None and took >= 0.8 * max(1, int(limit)):
            raise RadosFSError(errno.ETIMEDOUT, f"listing of pool {io.name} ended after "
                                                f"{took:.0f}s: librados timed out (an OSD "
                                                f"did not answer), not the end of the pool")
        if names:
            yield names
        if len(names) < chunk:
            return
