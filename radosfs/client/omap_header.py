"""Omap headers: what python-rados and librados' C API cannot read or set at all.

Only librados' C++ API has `omap_get_header` / `omap_set_header`. A small C++ shim
(`omap_header_shim.cpp`, built by scripts/setup into `libradosfs_omap.so` next to this
module) exposes them as C functions taking the C API's `rados_ioctx_t`, which ctypes can
pass: the ioctxs of the listing handle (client/listing.py), since the Cython `Ioctx`
does not expose its own. The calls block (call them through `Bridge.run`); the listing
handle has the mount's op timeouts.

Without the shim (a checkout installed without scripts/setup, no g++ or headers) the
mount works as before: it says so once in the log, and a rename cannot carry an omap
header (docs/semantics.md says what is lost then).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path

from ..errors import RadosFSError
from .listing import Lister, librados_c

log = logging.getLogger(__name__)

SHIM = Path(__file__).with_name("libradosfs_omap.so")


def load_shim(path: Path = SHIM) -> ctypes.CDLL | None:
    """The shim library, or None (with one log line saying why and what it costs)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        why = "not built" if not path.exists() else f"cannot be loaded ({exc})"
        log.warning("omap headers: %s is %s (scripts/setup builds it): a rename loses an "
                    "object's omap header", path, why)
        return None
    vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    lib.radosfs_omap_get_header.argtypes = [vp, cp, ctypes.POINTER(ctypes.c_void_p),
                                            ctypes.POINTER(sz)]
    lib.radosfs_omap_set_header.argtypes = [vp, cp, cp, sz]
    lib.radosfs_omap_free.argtypes = [vp]
    lib.radosfs_omap_free.restype = None
    return lib


class OmapHeaders:
    """Reads and sets objects' omap headers (in the RADOS namespace given, "" = the default). Blocking: call through
    `Bridge.run`. `available` is False without the shim: then `get` gives b"" (no header
    can be seen) and `set` of a header refuses with EXDEV (nothing may be lost silently)."""

    def __init__(self, lister: Lister, shim: Path = SHIM) -> None:
        self._lister = lister
        self._lib = load_shim(shim)

    @property
    def available(self) -> bool:
        return self._lib is not None

    def get(self, pool: str, oid: str, namespace: str = "") -> bytes:
        """`oid`'s omap header (b"": none, or no shim). ENOENT without the object."""
        lib = self._lib
        if lib is None:
            return b""
        with self._lister.c_ioctx(pool, namespace=namespace) as io:
            buf, n = ctypes.c_void_p(), ctypes.c_size_t()
            rc = lib.radosfs_omap_get_header(io, os.fsencode(oid), ctypes.byref(buf),
                                             ctypes.byref(n))
            if rc < 0:
                raise RadosFSError(-rc, f"reading the omap header of {pool}/{oid}: "
                                        f"{os.strerror(-rc)}")
            try:
                return ctypes.string_at(buf, n.value)
            finally:
                lib.radosfs_omap_free(buf)

    def set(self, pool: str, oid: str, header: bytes, namespace: str = "") -> None:
        """Set the omap header of `oid`, which exists (never created here)."""
        lib = self._lib
        if lib is None:
            raise RadosFSError(errno.EXDEV, f"{pool}/{oid}: an omap header cannot be set "
                                            "without the shim")
        with self._lister.c_ioctx(pool, namespace=namespace) as io:
            # As the mount's own ioctxs: at a quota or full cluster fail, don't block.
            librados_c().rados_set_pool_full_try(io)
            rc = lib.radosfs_omap_set_header(io, os.fsencode(oid), header, len(header))
        if rc < 0:
            raise RadosFSError(-rc, f"setting the omap header of {pool}/{oid}: "
                                    f"{os.strerror(-rc)}")
