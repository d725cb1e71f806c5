"""The RBD object-class calls radosfs makes without opening an image.

Names and attributes come without opening images: lookup asks `rbd_directory` for the image
id (cls `rbd.dir_get_id`), and size/mtime come from the image header (cls `rbd.get_size`,
`rbd.get_modify_timestamp`), one round trip each. These are the same object-class calls
librbd itself makes. Format-1 images (not creatable since Jewel/Pacific) are not handled.

Metadata is read with the cls calls too, not `Image.metadata_list()`: the Pacific binding
splits the packed values on NULs and raises on a non-UTF-8 value (see image_metadata).
"""
from __future__ import annotations

import errno
import struct
from typing import Any

import rados

from ..client.bridge import Bridge, concurrently, read_buffer
from ..errors import RadosFSError
from .ownership import ATTRS_XATTR, NO_OVERRIDE, Ownership

CEPH_NOSNAP = 0xFFFFFFFFFFFFFFFE
RBD_DIRECTORY = "rbd_directory"
METADATA_PAGE = 64               # metadata entries per cls call
METADATA_OUT = 1 << 20           # output buffer for one page of metadata


def header_oid(image_id: str) -> str:
    """The header object of a format-2 image."""
    return "rbd_header." + image_id


def _enc_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def _dec_str(b: bytes) -> str:
    (n,) = struct.unpack_from("<I", b, 0)
    return b[4:4 + n].decode()


async def _cls(bridge: Bridge, io: rados.Ioctx, oid: str, method: str, data: bytes = b"",
               length: int = 4096) -> bytes:
    rv, out = await bridge.aio(
        lambda cb: io.aio_execute(oid, "rbd", method, data, length, oncomplete=cb),
        with_length=True)
    return read_buffer(rv, out)


async def image_id_of(bridge: Bridge, io: rados.Ioctx, name: str) -> str:
    """The id of the image called `name`; RadosFSError(ENOENT) if there is none."""
    out = await _cls(bridge, io, RBD_DIRECTORY, "dir_get_id", _enc_str(name))
    return _dec_str(out)


async def image_attrs(bridge: Bridge, io: rados.Ioctx, image_id: str
                      ) -> tuple[int, float | None]:
    """(size, mtime) of an image at HEAD from its header; ENOENT if it is gone.

    The mtime is librbd's modify timestamp, which librbd updates at most every
    `rbd_mtime_update_interval` (60 s) while the image is written; images created before
    Mimic have none and give their create timestamp; None if neither exists.
    """
    oid = header_oid(image_id)
    res: dict[str, Any] = {}

    async def size() -> None:
        out = await _cls(bridge, io, oid, "get_size", struct.pack("<Q", CEPH_NOSNAP))
        res["size"] = struct.unpack_from("<BQ", out, 0)[1]

    async def mtime() -> None:
        for method in ("get_modify_timestamp", "get_create_timestamp"):
            try:
                out = await _cls(bridge, io, oid, method)
            except RadosFSError as exc:
                if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                    continue
                raise
            sec, nsec = struct.unpack_from("<II", out, 0)
            if sec:
                res["mtime"] = sec + nsec / 1e9
                return

    async with concurrently() as n:
        n.start_soon(size)
        n.start_soon(mtime)
    return res["size"], res.get("mtime")


def _dec_map(b: bytes) -> dict[str, bytes]:
    """A Ceph-encoded map<string, bufferlist>."""
    (n,) = struct.unpack_from("<I", b, 0)
    pos = 4
    out: dict[str, bytes] = {}
    for _ in range(n):
        (klen,) = struct.unpack_from("<I", b, pos)
        key = b[pos + 4:pos + 4 + klen].decode("utf-8", "surrogateescape")
        pos += 4 + klen
        (vlen,) = struct.unpack_from("<I", b, pos)
        out[key] = b[pos + 4:pos + 4 + vlen]
        pos += 4 + vlen
    return out


async def image_metadata(bridge: Bridge, io: rados.Ioctx, image_id: str) -> dict[str, bytes]:
    """All image metadata (`rbd image-meta list`), read from the header (cls metadata_list).

    Not through `Image.metadata_list()`: the Pacific binding splits the packed values on
    NULs, so one empty value shifts every later key/value pair (keys go missing), and one
    non-UTF-8 value makes it raise for the whole image.
    """
    out: dict[str, bytes] = {}
    start = ""
    while True:
        raw = await _cls(bridge, io, header_oid(image_id), "metadata_list",
                         _enc_str(start) + struct.pack("<Q", METADATA_PAGE), METADATA_OUT)
        page = _dec_map(raw) if raw else {}
        out.update(page)
        if len(page) < METADATA_PAGE:
            return out
        start = max(page)


async def image_metadata_get(bridge: Bridge, io: rados.Ioctx, image_id: str,
                             key: str) -> bytes:
    """One metadata value; RadosFSError(ENODATA) if the key is not set."""
    try:
        raw = await _cls(bridge, io, header_oid(image_id), "metadata_get", _enc_str(key),
                         METADATA_OUT)
    except RadosFSError as exc:
        if exc.errno == errno.ENOENT:
            raise RadosFSError(errno.ENODATA, f"no image metadata {key}") from None
        raise
    (n,) = struct.unpack_from("<I", raw, 0)
    return raw[4:4 + n]


async def image_record(bridge: Bridge, io: rados.Ioctx, image_id: str) -> Ownership:
    """radosfs's metadata record of an image (store/ownership.py), kept in the image
    metadata key `radosfs.attrs` ("-" = empty: librbd refuses empty values)."""
    try:
        raw = await image_metadata_get(bridge, io, image_id, ATTRS_XATTR)
    except RadosFSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOENT):
            return NO_OVERRIDE
        raise
    return Ownership.decode(raw if raw != b"-" else b"")
