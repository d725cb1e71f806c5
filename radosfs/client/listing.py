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
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from contextlib import contextmanager
from typing import Iterator

import rados

from ..errors import RadosFSError

log = logging.getLogger(__name__)

ALL_NAMESPACES = b"\x01"  # LIBRADOS_ALL_NSPACES

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


class Lister:
    """Lists pools through librados' C API. Blocking: call through `Bridge.run`."""

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

    @contextmanager
    def c_ioctx(self, pool: str, listing: bool = False, namespace: str = ""
                ) -> Iterator[ctypes.c_void_p]:
        """A C API `rados_ioctx_t` of `pool` (in `namespace`, "" = the default one) on this
        handle, destroyed on exit (blocking; also for client/omap_header.py). RadosFSError
        if the pool cannot be opened."""
        lib = librados_c()
        cluster = self._connect()
        io = ctypes.c_void_p()
        rc = lib.rados_ioctx_create(cluster, pool.encode(), ctypes.byref(io))
        if rc < 0:
            if listing:
                self._fail(pool, -rc, "opening the pool")
            shown = errno.EIO if -rc == errno.ETIMEDOUT else -rc
            raise RadosFSError(shown, f"cannot open pool {pool}: {_why(-rc)}")
        try:
            if namespace:
                lib.rados_ioctx_set_namespace(io, namespace.encode())
            yield io
        finally:
            lib.rados_ioctx_destroy(io)

    def list_names(self, pool: str, all_namespaces: bool = False,
                   limit: int | None = None, namespace: str = "") -> list[bytes]:
        """Every object name of `pool` (in `namespace`, "" = the default one, or in every
        namespace), as raw bytes, in listing order; at most `limit` names when given (the
        first ones).

        Raises RadosFSError (EIO for a timeout, EPERM/EACCES, ENOENT for a pool that is
        gone, ...) when the listing did not complete, after one log line naming the pool
        and the cause. Never returns a short list."""
        nspace = ALL_NAMESPACES if all_namespaces else namespace.encode()
        return [name for name, _ in self._list(pool, nspace, limit)]

    def list_namespaces(self, pool: str) -> set[bytes]:
        """The namespaces of `pool` holding at least one object (b"" = the default one),
        from a listing of every namespace: complete, or RadosFSError as list_names."""
        return {ns for _, ns in self._list(pool, ALL_NAMESPACES, None)}

    def _list(self, pool: str, nspace: bytes, limit: int | None
              ) -> list[tuple[bytes, bytes]]:
        """(name, namespace) of every object listed in `nspace` (a namespace's name, b""
        for the default one, or ALL_NAMESPACES)."""
        lib = librados_c()
        with self.c_ioctx(pool, listing=True) as io:
            ctx = ctypes.c_void_p()
            if nspace:
                lib.rados_ioctx_set_namespace(io, nspace)
            rc = lib.rados_nobjects_list_open(io, ctypes.byref(ctx))
            if rc < 0:
                self._fail(pool, -rc, "opening the listing")
            try:
                return self._drain(lib, pool, ctx, limit)
            finally:
                lib.rados_nobjects_list_close(ctx)

    def _drain(self, lib, pool: str, ctx: ctypes.c_void_p, limit: int | None
               ) -> list[tuple[bytes, bytes]]:
        entry = ctypes.POINTER(ctypes.c_char)()
        key = ctypes.POINTER(ctypes.c_char)()
        nspace = ctypes.POINTER(ctypes.c_char)()
        entry_len, key_len, nspace_len = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        names: list[tuple[bytes, bytes]] = []
        while limit is None or len(names) < limit:
            rc = lib.rados_nobjects_list_next2(
                ctx, ctypes.byref(entry), ctypes.byref(key), ctypes.byref(nspace),
                ctypes.byref(entry_len), ctypes.byref(key_len), ctypes.byref(nspace_len))
            if rc == -errno.ENOENT:
                break  # the end of the list: the only way a listing completes
            if rc < 0:
                self._fail(pool, -rc, f"after {len(names)} names")
            names.append((ctypes.string_at(entry, entry_len.value),
                          ctypes.string_at(nspace, nspace_len.value)
                          if nspace and nspace_len.value else b""))
        return names

    @staticmethod
    def _fail(pool: str, err: int, when: str) -> None:
        # One log line per failure: the request that asked logs this error with its own name.
        log.debug("listing of pool %s failed %s: %s", pool, when, _why(err))
        shown = errno.EIO if err == errno.ETIMEDOUT else err
        raise RadosFSError(shown, f"listing of pool {pool} did not complete ({when}): "
                                  f"{_why(err)}")

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                librados_c().rados_shutdown(self._cluster)
                self._cluster = None
