"""Copying what an object carries besides its data: xattrs and omap (keys and header).

A rename copies (RADOS has none); it must carry all of it, or refuse (EXDEV) what it cannot
carry -- never lose it silently. On a striped file the xattrs and omap that belong to the
file are piece 0's (libradosstriper itself keeps none in omap; tools that put omap on a
striped file put it there). The omap header goes through client/omap_header.py (only
librados' C++ API has it); without its shim a header cannot even be seen, and is lost.
"""
from __future__ import annotations

import errno
import logging

import rados

from ..client.bridge import Bridge
from ..client.omap_header import OmapHeaders
from ..errors import RadosFSError

log = logging.getLogger(__name__)

OMAP_BATCH = 1000


def read_omap(io: rados.Ioctx, oid: str) -> dict[str, bytes]:
    """Every omap key and value of `oid` (blocking; call through Bridge.run)."""
    out: dict[str, bytes] = {}
    start = ""
    while True:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, start, "", OMAP_BATCH)
            io.operate_read_op(op, oid)
            try:
                batch = list(it)
            except UnicodeDecodeError:
                raise RadosFSError(errno.EXDEV, f"{oid} has an omap key that is not UTF-8 "
                                                "(python-rados cannot copy it): not moved")
        for key, value in batch:
            out[key] = value if value is not None else b""
        if len(batch) < OMAP_BATCH:
            return out
        start = batch[-1][0]


def write_meta(io: rados.Ioctx, oid: str, xattrs: dict[str, bytes],
               omap: dict[str, bytes]) -> None:
    """Set xattrs and omap keys on an existing object (blocking), in batches."""
    items = list(omap.items())
    first = True
    for start in range(0, max(len(items), 1), OMAP_BATCH):
        part = items[start:start + OMAP_BATCH]
        if not part and not (first and xattrs):
            return
        with rados.WriteOpCtx() as op:
            if first:
                for key, value in xattrs.items():
                    op.set_xattr(key, value)
            if part:
                io.set_omap(op, tuple(k for k, _ in part), tuple(v for _, v in part))
            io.operate_write_op(op, oid)
        first = False


def copy_header(headers: OmapHeaders, io: rados.Ioctx, src: str, dst: str) -> None:
    """Give dst (which exists, without a header) src's omap header, if it has one
    (blocking); both in `io`'s pool and namespace."""
    pool, namespace = io.get_pool_name(), io.get_namespace()
    header = headers.get(pool, src, namespace)
    if header:
        headers.set(pool, dst, header, namespace)


async def copy_metadata(bridge: Bridge, io: rados.Ioctx, src: str, dst: str,
                        headers: OmapHeaders, skip_xattrs: tuple[str, ...] = ()) -> None:
    """Copy src's xattrs (but `skip_xattrs`), omap keys and omap header to dst (which
    exists, new: it has none of them)."""
    def copy() -> None:
        try:
            xattrs = {k: v for k, v in io.get_xattrs(src) if k not in skip_xattrs}
            omap = read_omap(io, src)
        except rados.ObjectNotFound:
            raise RadosFSError(errno.ENOENT, f"no object {src}") from None
        write_meta(io, dst, xattrs, omap)
        copy_header(headers, io, src, dst)
    await bridge.run(copy)
