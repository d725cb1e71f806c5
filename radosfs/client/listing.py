"""Checked object listings: the one way radosfs lists a pool.

python-rados' `Ioctx.list_objects()` cannot be trusted for this:

* `ObjectIterator.__next__` turns *every* negative return of `rados_nobjects_list_next2`
  into `StopIteration` -- the end of the list (-ENOENT) as well as a timeout on inactive
  placement groups (-ETIMEDOUT) or a key without OSD caps on the pool (-EPERM). A listing
  that failed looks exactly like a complete (or empty) one.
* It decodes every name as UTF-8 itself, so one object name that is not UTF-8 raises
  UnicodeDecodeError and the names after it are lost.

So listings call librados' C API directly (ctypes, `librados.so.2`) on a second cluster
handle configured like the mount's own (same conf file, user, keyring, timeouts): the
Cython `Ioctx` does not expose its `rados_ioctx_t`. `list_names` returns every name as raw
bytes and raises `RadosFSError` when the listing did not reach its end: the list returned
is always complete, never short.

A listing is progress-bounded, not bounded as a whole: `list_entries` opens it in one
bridge call, then drains it in batches of at most LIST_BATCH names, each its own bridge
call bounded by op_timeout, so a pool of millions of objects lists as long as it keeps
moving. A batch the bridge abandoned may still be inside librados with the listing
context: `ListCursor.close` then only marks it, and that batch closes it when it returns.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn, TypeVar

import rados
import trio

from ..errors import RadosFSError
from .bridge import Bridge

log = logging.getLogger(__name__)
T = TypeVar("T")

ALL_NAMESPACES = b"\x01"  # LIBRADOS_ALL_NSPACES
# Names per bridge call of a listing (each call bounded by op_timeout on its own). The
# environment variable is for tests, to list more than one batch of a small pool.
LIST_BATCH = max(1, int(os.environ.get("RADOSFS_LIST_BATCH", "") or 10_000))

# Settings copied from the mount's handle to the listing handle.
COPIED_SETTINGS = ("keyring", "key", "keyfile", "mon_host", "client_mount_timeout",
                   "rados_mon_op_timeout", "rados_osd_op_timeout", "auth_client_required",
                   "ms_mon_client_mode", "ms_client_mode")

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def librados_c() -> ctypes.CDLL:
    """librados' C API through ctypes (loaded once; the functions radosfs calls typed)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL("librados.so.2", use_errno=False)
            vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
            lib.rados_create2.argtypes = [ctypes.POINTER(vp), cp, cp, ctypes.c_uint64]
            lib.rados_conf_read_file.argtypes = [vp, cp]
            lib.rados_conf_set.argtypes = [vp, cp, cp]
            lib.rados_connect.argtypes = [vp]
            lib.rados_shutdown.argtypes = [vp]
            lib.rados_shutdown.restype = None
            lib.rados_ioctx_create.argtypes = [vp, cp, ctypes.POINTER(vp)]
            lib.rados_ioctx_destroy.argtypes = [vp]
            lib.rados_ioctx_destroy.restype = None
            lib.rados_ioctx_set_namespace.argtypes = [vp, cp]
            lib.rados_ioctx_set_namespace.restype = None
            lib.rados_set_pool_full_try.argtypes = [vp]
            lib.rados_set_pool_full_try.restype = None
            lib.rados_nobjects_list_open.argtypes = [vp, ctypes.POINTER(vp)]
            lib.rados_nobjects_list_close.argtypes = [vp]
            lib.rados_nobjects_list_close.restype = None
            lib.rados_nobjects_list_next2.argtypes = [
                vp, ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
                ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
                ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
                ctypes.POINTER(sz), ctypes.POINTER(sz), ctypes.POINTER(sz)]
            _lib = lib
        return _lib


def _why(err: int) -> str:
    if err == errno.ETIMEDOUT:
        return "timed out (placement groups inactive or OSDs unreachable)"
    if err in (errno.EPERM, errno.EACCES):
        return "permission denied (the key has no OSD caps on this pool)"
    return os.strerror(err)


def _fail(pool: str, err: int, when: str) -> NoReturn:
    """Raise the RadosFSError of a listing that did not complete."""
    # One log line per failure: the request that asked logs this error with its own name.
    log.debug("listing of pool %s failed %s: %s", pool, when, _why(err))
    shown = errno.EIO if err == errno.ETIMEDOUT else err
    raise RadosFSError(shown, f"listing of pool {pool} did not complete ({when}): "
                              f"{_why(err)}")


class ListCursor:
    """One listing of a pool (`rados_nobjects_list_open`) and the ioctx it lists: `open`,
    then `next_batch` calls, then `close` (the first two blocking: each through
    `Bridge.run`; `close` never waits for librados: releasing is a local free, or left
    to the call still running).

    Trap: the bridge abandons a call that overruns op_timeout while its worker thread is
    still inside librados with this ioctx and listing context, and the caller then closes
    the cursor from another thread. Closing the context or destroying the ioctx under it
    would be a use-after-free, so `close` releases them at once only when no call is
    running; otherwise it marks the cursor and the running call releases them when it
    returns (an abandoned `open` too). Released exactly once; a call after `close`, or
    two at once, fails with EBADF."""

    def __init__(self, lister: Lister, pool: str, nspace: bytes) -> None:
        self.lister = lister
        self.pool = pool
        self.nspace = nspace
        self._io: ctypes.c_void_p | None = None
        self._ctx: ctypes.c_void_p | None = None
        self._state = threading.Lock()  # guards the flags; never held inside librados
        self._busy = False
        self._closing = False
        self.released = False

    def open(self) -> None:
        """Open the pool's ioctx (in `nspace`) and the listing. RadosFSError (after one log
        line) if either fails."""
        self._while_busy(self._open)

    def next_batch(self, count: int, before: int = 0
                   ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Up to `count` more (name, namespace) entries, and whether the listing reached its
        end. `before` (names listed so far) is for the error message. RadosFSError (after
        one log line) when librados fails: the listing did not complete."""
        return self._while_busy(self._drain, count, before)

    def close(self) -> None:
        """Release the listing and its ioctx now, or, while a call runs, when it returns."""
        with self._state:
            if self._closing:
                return
            self._closing = True
            if self._busy:
                return  # the running call releases them
        self._release()

    def _while_busy(self, fn: Callable[..., T], *args: Any) -> T:
        with self._state:
            if self._closing or self._busy:
                raise RadosFSError(errno.EBADF, f"listing of pool {self.pool} used after "
                                                f"close or by two calls at once")
            self._busy = True
        try:
            return fn(*args)
        finally:
            with self._state:
                self._busy = False
                release = self._closing
            if release:
                self._release()

    def _open(self) -> None:
        lib = librados_c()
        self._io = self.lister.open_ioctx(self.pool, True, self.nspace)
        ctx = ctypes.c_void_p()
        rc = lib.rados_nobjects_list_open(self._io, ctypes.byref(ctx))
        if rc < 0:
            _fail(self.pool, -rc, "opening the listing")
        self._ctx = ctx

    def _release(self) -> None:
        lib = librados_c()
        if self._ctx is not None:
            lib.rados_nobjects_list_close(self._ctx)
        if self._io is not None:
            lib.rados_ioctx_destroy(self._io)
        self._io = self._ctx = None
        self.released = True

    def _drain(self, count: int, before: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        lib = librados_c()
        entry = ctypes.POINTER(ctypes.c_char)()
        key = ctypes.POINTER(ctypes.c_char)()
        nspace = ctypes.POINTER(ctypes.c_char)()
        entry_len, key_len, nspace_len = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        names: list[tuple[bytes, bytes]] = []
        ctx = self._ctx
        while len(names) < count:
            rc = lib.rados_nobjects_list_next2(
                ctx, ctypes.byref(entry), ctypes.byref(key), ctypes.byref(nspace),
                ctypes.byref(entry_len), ctypes.byref(key_len), ctypes.byref(nspace_len))
            if rc == -errno.ENOENT:
                return names, True  # the end of the list: the only way a listing completes
            if rc < 0:
                _fail(self.pool, -rc, f"after {before + len(names)} names")
            names.append((ctypes.string_at(entry, entry_len.value),
                          ctypes.string_at(nspace, nspace_len.value)
                          if nspace and nspace_len.value else b""))
        return names, False


class Lister:
    """Lists pools through librados' C API on its own cluster handle: `list_names`,
    `list_namespaces` (async: each step through a `Bridge`); `c_ioctx` (blocking)."""

    def __init__(self, handle: rados.Rados, name: str = "client.admin") -> None:
        self._handle = handle
        self._name = name
        self._cluster: ctypes.c_void_p | None = None
        self._lock = threading.Lock()

    def _connect(self) -> ctypes.c_void_p:
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            lib = librados_c()
            c = ctypes.c_void_p()
            name = self._name.encode()
            rc = lib.rados_create2(ctypes.byref(c), b"ceph", name, 0)
            if rc < 0:
                raise RadosFSError(-rc, f"listing handle: rados_create2 failed ({-rc})")
            try:
                conffile = self._handle.conffile
                if isinstance(conffile, str) and conffile:
                    rc = lib.rados_conf_read_file(c, os.fsencode(conffile))
                    if rc < 0:
                        raise RadosFSError(-rc, f"listing handle: cannot read {conffile}")
                elif conffile != rados.Rados.NO_CONF_FILE:
                    lib.rados_conf_read_file(c, None)  # the default search path
                for key in COPIED_SETTINGS:
                    try:
                        value = self._handle.conf_get(key)
                    except rados.Error:
                        continue
                    if value:
                        lib.rados_conf_set(c, key.encode(), str(value).encode())
                rc = lib.rados_connect(c)
                if rc < 0:
                    raise RadosFSError(-rc, f"listing handle: cannot connect ({_why(-rc)})")
            except BaseException:
                lib.rados_shutdown(c)
                raise
            self._cluster = c
            return c

    def open_ioctx(self, pool: str, listing: bool, namespace: bytes) -> ctypes.c_void_p:
        """A new C API ioctx of `pool` in `namespace` (b"" = the default one, or
        ALL_NAMESPACES), owned by the caller (blocking). RadosFSError if the pool cannot
        be opened (after one log line when `listing`)."""
        lib = librados_c()
        cluster = self._connect()
        io = ctypes.c_void_p()
        rc = lib.rados_ioctx_create(cluster, pool.encode(), ctypes.byref(io))
        if rc < 0:
            if listing:
                _fail(pool, -rc, "opening the pool")
            shown = errno.EIO if -rc == errno.ETIMEDOUT else -rc
            raise RadosFSError(shown, f"cannot open pool {pool}: {_why(-rc)}")
        if namespace:
            lib.rados_ioctx_set_namespace(io, namespace)
        return io

    @contextmanager
    def c_ioctx(self, pool: str, listing: bool = False, namespace: str = ""
                ) -> Iterator[ctypes.c_void_p]:
        """A C API `rados_ioctx_t` of `pool` (in `namespace`, "" = the default one) on this
        handle, destroyed on exit (blocking; also for client/omap_header.py). RadosFSError
        if the pool cannot be opened."""
        io = self.open_ioctx(pool, listing, namespace.encode())
        try:
            yield io
        finally:
            librados_c().rados_ioctx_destroy(io)

    async def list_entries(self, bridge: Bridge, pool: str, nspace: bytes,
                           limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(name, namespace) of every object of `pool` listed in `nspace` (a namespace's
        name, b"" for the default one, or ALL_NAMESPACES), in listing order; at most
        `limit` (the first ones) when given.

        Opens the listing, then drains it in batches of LIST_BATCH names, each a bridge
        call bounded by op_timeout on its own (so the whole listing is bounded by its
        progress, not its size), and closes it whatever happens. Complete, or
        RadosFSError (EIO for a timeout, EPERM/EACCES, ENOENT for a pool that is gone,
        ...) after one log line: never a short list."""
        what = f"listing of pool {pool}"
        cursor = ListCursor(self, pool, nspace)
        try:
            await bridge.run(cursor.open, what=what)
            entries: list[tuple[bytes, bytes]] = []
            while limit is None or len(entries) < limit:
                want = LIST_BATCH if limit is None else min(LIST_BATCH, limit - len(entries))
                batch, at_end = await bridge.run(cursor.next_batch, want, len(entries),
                                                 what=what)
                entries.extend(batch)
                if at_end:
                    break
            return entries
        finally:
            # Even when cancelled or timed out (shielded), and in a worker thread: the frees
            # are librados calls too. close() only marks a cursor whose call is still inside
            # librados; that call releases it when it returns.
            with trio.CancelScope(shield=True):
                try:
                    await bridge.run(cursor.close, what=f"closing the {what}")
                except RadosFSError as exc:
                    log.warning("%s was not closed (%s): its listing context is leaked",
                                what, exc)

    async def list_names(self, bridge: Bridge, pool: str, all_namespaces: bool = False,
                         limit: int | None = None, namespace: str = "") -> list[bytes]:
        """Every object name of `pool` (in `namespace`, "" = the default one, or in every
        namespace), as raw bytes, in listing order; at most `limit` names when given (the
        first ones). Complete, or RadosFSError as list_entries."""
        nspace = ALL_NAMESPACES if all_namespaces else namespace.encode()
        return [name for name, _ in await self.list_entries(bridge, pool, nspace, limit)]

    async def list_namespaces(self, bridge: Bridge, pool: str) -> set[bytes]:
        """The namespaces of `pool` holding at least one object (b"" = the default one),
        from a listing of every namespace: complete, or RadosFSError as list_entries."""
        return {ns for _, ns in await self.list_entries(bridge, pool, ALL_NAMESPACES)}

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                librados_c().rados_shutdown(self._cluster)
                self._cluster = None
