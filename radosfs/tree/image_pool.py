"""RBD images as files: the directory of a pool whose applications include 'rbd'.

Such a pool is shown flat, one regular file per image (RBD's own objects -- rbd_directory,
rbd_header.*, rbd_data.*, ... -- never show). Reading and writing a file reads and writes the
image through librbd's asynchronous calls, under the same page cache as object files
(store/image_backend.py); names and attributes come from object-class calls, without
opening images (store/rbd_cls.py).
"""
from __future__ import annotations

import errno

import pyfuse3

from ..client.bridge import concurrently
from ..errors import RadosFSError
from ..store.ownership import NO_OVERRIDE, Ownership
from ..store.rbd_cls import image_attrs, image_id_of, image_record
from .base import DirNode, Entry, FileNode, Node
from .context import MountContext
from .inodes import IMAGE_POOL, NodeKey, image_key
from .names import SNAPDIR, check_component, valid_path_name
from .pool_xattrs import PoolXattrs

STAT_BATCH = 256                 # images stat'ed concurrently per readdir batch


class ImagePool(PoolXattrs, DirNode):
    """The directory of a pool whose applications include 'rbd': one file per image.

    Flat: mkdir -> EPERM, rmdir -> ENOTDIR for an image name (else ENOENT). create makes a
    0-byte image with librbd's default features (what `rbd create` uses); unlink removes it
    (see ImageFile.remove for the errnos); rename is `RBD.rename`, replacing an existing
    target image by removing it first (not atomic: a crash in between loses the target).
    Objects of the pool that are not images are never shown.
    """

    def __init__(self, fs: MountContext, pool: str) -> None:
        super().__init__(fs, NodeKey(IMAGE_POOL, pool))
        self.pool = pool

    def file_node(self, name: str, image_id: str) -> FileNode:
        return self.kinds.image_file(self.pool, name, image_id)

    async def lookup(self, name: str) -> Node:
        check_component(name)
        if name == SNAPDIR:
            return self.kinds.snap_root(self.pool, images=True)
        io = await self.fs.images.ioctx(self.pool)
        try:
            image_id = await image_id_of(self.fs.bridge, io, name)
        except RadosFSError as exc:
            if exc.errno == errno.ENOENT:
                self.fs.table.drop(image_key(self.pool, name))
                raise RadosFSError(errno.ENOENT, f"no image {self.pool}/{name}") from None
            raise
        return self.file_node(name, image_id)

    async def entries(self):
        io = await self.fs.images.ioctx(self.pool)
        images = await self.fs.images.list_images(self.pool)
        images = sorted((i for i in images if i.get("id") and valid_path_name(i["name"])
                         and "/" not in i["name"]), key=lambda i: i["name"])
        bridge = self.fs.bridge
        for start in range(0, len(images), STAT_BATCH):
            chunk = images[start:start + STAT_BATCH]
            out: list[Entry | None] = [None] * len(chunk)

            async def one(i: int, name: str, image_id: str) -> None:
                try:
                    size, mtime = await image_attrs(bridge, io, image_id)
                except RadosFSError as exc:
                    if exc.errno == errno.ENOENT:
                        return  # removed (or still being created) meanwhile
                    raise
                node = self.file_node(name, image_id)
                node.owner = await image_record(bridge, io, image_id)
                out[i] = (name, node, await node.attributes_from(size, mtime))

            async with concurrently() as n:
                for i, img in enumerate(chunk):
                    n.start_soon(one, i, img["name"], img["id"])
            batch = [x for x in out if x is not None]
            if batch:
                yield batch

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        """A new 0-byte image; `owner` (a mode/uid/gid the creator asked for beyond the
        mount's defaults) is stored in its metadata (see ImageFile)."""
        check_component(name)
        await self.fs.images.create_image(self.pool, name)
        node = await self.lookup(name)
        assert isinstance(node, FileNode)
        if owner != NO_OVERRIDE:
            await node.set_ownership(owner)
        return node

    async def unlink(self, name: str) -> None:
        node = await self.lookup(name)
        assert isinstance(node, FileNode)
        await node.remove()
        self.fs.table.drop(node.key)

    async def rmdir(self, name: str) -> None:
        await self.lookup(name)
        raise RadosFSError(errno.ENOTDIR, f"{self.pool}/{name} is an image, not a directory")

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        raise RadosFSError(errno.EPERM, "image pools are flat: no directories")

    async def rename(self, old: str, new_parent: DirNode, new: str, flags: int) -> None:
        """Rename image `old` to `new` in this pool (`RBD.rename`).

        An existing `new` is removed first unless `flags` has RENAME_NOREPLACE (EEXIST).
        The inode of `old` becomes the file at `new`; open handles keep working (the image
        is open by id).
        """
        if new_parent is not self:
            raise RadosFSError(errno.EXDEV, "images move only within their pool")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise RadosFSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        check_component(new)
        node = await self.lookup(old)
        if old == new:
            return
        target = await self.rename_target(new, flags)
        if isinstance(target, FileNode):
            await target.remove()
            self.fs.table.drop(target.key)
        await self.fs.images.rename_image(self.pool, old, new)
        self.fs.table.drop(image_key(self.pool, new))
        self.fs.table.rekey(node, image_key(self.pool, new))  # its name is its key's
        if isinstance(node, FileNode):
            self.fs.images.renamed(node.backend_key, new)
