"""One RBD image as a regular file: attributes from the image header, data through the
image's backend, xattrs as image metadata."""
from __future__ import annotations

import errno
import logging
from typing import Any, Callable

import rbd

from ..client.bridge import concurrently
from ..cache import CachedFile
from ..errors import RadosFSError
from ..store.image_backend import ImageBackend
from ..store.keys import StoreKey
from ..store.ownership import ATTRS_XATTR, Ownership, check_time, now_ns
from ..store.rbd_cls import (image_attrs, image_id_of, image_metadata, image_metadata_get,
                              image_record)
from .base import FileNode
from .context import MountContext
from .inodes import image_key

log = logging.getLogger(__name__)


class ImageFile(FileNode):
    """One RBD image shown as a regular file (at HEAD, or read-only at a snapshot).

    * size = the image size; mtime = librbd's modify timestamp (updated by librbd at most
      every 60 s while written; the create timestamp for images that have none, else the
      mount time); for a snapshot view, the snapshot's timestamp.
    * xattrs `user.KEY` are the image metadata `KEY` (`rbd image-meta list`). New values
      must be non-empty UTF-8 (EINVAL otherwise: the Python binding's metadata_list breaks
      on anything else), but whatever other tools stored reads back as stored. librbd uses
      keys named `conf_*` as per-image configuration overrides; they show here as well.
    * mode, owner and exact times (chmod, chown, utimens) are the record of
      store/ownership.py in the image metadata key `radosfs.attrs` (not shown as an
      xattr); its times hold while librbd's modify timestamp stays what it was when they
      were stored (a write moves it, within rbd_mtime_update_interval).
    """

    def __init__(self, fs: MountContext, pool: str, name: str, image_id: str,
                 snapshot: str | None = None, snap_id: int | None = None) -> None:
        super().__init__(fs, image_key(pool, name, snapshot, snap_id, fs.namespace))
        self.pool = pool
        self.image_id = image_id
        self.snapshot = snapshot
        self.snap_id = snap_id
        self.read_only = snapshot is not None

    @property
    def name(self) -> str:
        """The image's name: its key's (a rename rekeys the node)."""
        return self.key.path

    @property
    def stored_key(self) -> StoreKey:
        # By image id: a rename does not move the cached pages or the open image.
        return StoreKey.image(self.pool, self.image_id, self.snapshot, self.snap_id,
                              self.fs.namespace)

    async def stored_backend(self) -> ImageBackend:
        return await self.fs.images.backend(self.pool, self.image_id, self.name,
                                            self.snapshot, self.snap_id)

    async def stat_stored(self) -> tuple[int, float]:
        if self.snapshot is not None:
            # RBD keeps image metadata (where the record is) only at HEAD: a snapshot
            # shows the image's mode and owner as they are now, its times the snapshot's.
            io = await self.fs.images.ioctx(self.pool)
            record = await image_record(self.fs.bridge, io, self.image_id)
            self.owner = record.owner_only
            size, mtime = await (await self.backend()).stat()
        else:
            io = await self.fs.images.ioctx(self.pool)
            got: dict = {}

            async def attrs() -> None:
                got["attrs"] = await image_attrs(self.fs.bridge, io, self.image_id)

            async def record() -> None:
                self.owner = await image_record(self.fs.bridge, io, self.image_id)

            async with concurrently() as n:
                n.start_soon(attrs)
                n.start_soon(record)
            size, mtime = got["attrs"]
        return size, mtime if mtime is not None else self.fs.mount_time

    # ---- xattrs = image metadata -------------------------------------------------------

    async def _meta(self, fn: Callable[[rbd.Image], Any]) -> Any:
        try:
            return await (await self.backend()).call(fn)
        except KeyError:
            raise RadosFSError(errno.ENODATA, "no such image metadata") from None

    async def list_xattrs(self) -> list[str]:
        io = await self.fs.images.ioctx(self.pool)
        return sorted(k for k in await image_metadata(self.fs.bridge, io, self.image_id)
                      if k != ATTRS_XATTR)

    async def get_xattr(self, key: str) -> bytes:
        if key == ATTRS_XATTR:
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        io = await self.fs.images.ioctx(self.pool)
        return await image_metadata_get(self.fs.bridge, io, self.image_id, key)

    async def set_xattr(self, key: str, value: bytes) -> None:
        if key == ATTRS_XATTR:
            raise RadosFSError(errno.EPERM, f"{key} is kept by radosfs itself")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RadosFSError(errno.EINVAL, "image metadata values must be UTF-8") from None
        if not text:
            # `rbd image-meta set` refuses empty values too, and the Python binding's
            # metadata_list() misreports every key after one.
            raise RadosFSError(errno.EINVAL, "image metadata values cannot be empty")
        await self._meta(lambda img: img.metadata_set(key, text))

    async def remove_xattr(self, key: str) -> None:
        if key == ATTRS_XATTR:
            raise RadosFSError(errno.ENODATA, f"no xattr {key}")
        await self._meta(lambda img: img.metadata_remove(key))

    async def _store(self, make) -> None:
        """A new record: `make(stored_mtime)` gives it (with the stamp = librbd's modify
        timestamp now, which radosfs cannot set)."""
        self.check_writable()
        _, stored = await self.stored_attrs()
        record = make(stored)
        text = record.encode().decode() or "-"  # image metadata values cannot be empty
        await self._meta(lambda img: img.metadata_set(ATTRS_XATTR, text))
        self.owner, self.mtime = record, stored

    async def set_ownership(self, owner: Ownership) -> None:
        await self._store(lambda stored: owner.with_times(stored, int(stored),
                                                          ctime=now_ns()))

    async def set_times(self, mtime: int | None, atime: int | None) -> None:
        for t in (mtime, atime):
            if t is not None:
                check_time(t)
        await self._store(lambda stored: self.owner.with_times(
            stored, int(stored), atime, mtime, now_ns()))

    async def open(self, writable: bool, truncate: bool) -> tuple[CachedFile, bool]:
        await self._check_current()
        return await super().open(writable, truncate)

    async def _check_current(self) -> None:
        """Close-to-open by name: an image removed, or renamed over, by another client
        since the kernel looked the name up is another file now (the old one may even
        still be readable by id, in the trash). ESTALE makes the kernel look the name up
        again and open what it is now."""
        if self.snapshot is not None or self.orphaned or self.created is not None:
            return
        f = self.fs.cache.get(self.stored_key)
        if f is not None and f.opens > 0:
            return  # open here already: the descriptors keep the file they opened
        io = await self.fs.images.ioctx(self.pool)
        try:
            current: str | None = await image_id_of(self.fs.bridge, io, self.name)
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            current = None
        if current != self.image_id:
            self.fs.table.drop(self.key)
            raise RadosFSError(errno.ESTALE, f"image {self.pool}/{self.name} was replaced "
                                             f"or removed by another client")

    async def remove(self) -> None:
        """Remove the image; see ImagePools.remove_image for the errnos (EBUSY).

        Unwritten data is written first when it can be; our own open image is closed (its
        watch would make the removal refuse). Data whose write-back fails (EDQUOT...) does
        not stop the removal: it stays dirty in the cache, where it goes with the file --
        kept when the removal is refused, held by the descriptors still open after it
        (removing a file must work whatever its unwritten data: it is how space is freed).
        Descriptors still open keep the file until their last close, detached from the
        cluster (what the image held is copied into memory while its data is still
        readable by id)."""
        if self.snapshot is not None:
            raise RadosFSError(errno.EROFS, "snapshot view")
        if self.orphaned:
            raise RadosFSError(errno.ENOENT, f"{self.describe()} was removed already")
        f = self.fs.cache.get(self.stored_key)
        if f is not None and f.dirty:
            try:
                await self.fs.cache.flush(f)
            except RadosFSError as exc:
                log.info("unlink of %s goes on with %d unwritten bytes (%s)",
                         self.describe(), f.dirty_bytes, exc)
        await self.fs.images.close_backend(self.stored_key)
        await self.fs.images.remove_image(self.pool, self.name)
        image = f.backend if f is not None else None
        await self.keep_while_open()   # may open the (trashed) image by id to copy it
        if isinstance(image, ImageBackend):
            await image.close()
        self.fs.images.forget_backend(self.stored_key)

