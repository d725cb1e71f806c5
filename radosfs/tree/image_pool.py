"""RBD images as files: the directory of a pool whose applications include 'rbd'.

Such a pool shows one regular file per image (RBD's own objects -- rbd_directory,
rbd_header.*, rbd_data.*, ... -- never show) and one directory per RBD namespace
(`rbd namespace ls`), which shows that namespace's images the same way. Reading and
writing a file reads and writes the image through librbd's asynchronous calls, under the
same page cache as object files (store/image_backend.py); names and attributes come from
object-class calls, without opening images (store/rbd_cls.py).
"""
from __future__ import annotations

import errno
import logging

import pyfuse3

from ..client.bridge import concurrently
from ..errors import RadosFSError
from ..store.ownership import NO_OVERRIDE, Ownership
from ..store.rbd_cls import image_attrs, image_id_of, image_record
from .base import DirNode, Entry, FileNode, Node
from .context import MountContext
from .inodes import IMAGE_POOL, NodeKey, image_key
from .names import SNAPDIR, check_component, shows_as_component, valid_path_name
from .pool_xattrs import PoolXattrs

log = logging.getLogger(__name__)

STAT_BATCH = 256                 # images stat'ed concurrently per readdir batch


class ImagePool(PoolXattrs, DirNode):
    """The directory of a pool whose applications include 'rbd' (or of one RBD namespace
    of it): one file per image, one directory per RBD namespace.

    create makes a 0-byte image with librbd's default features (what `rbd create` uses);
    unlink removes it (see ImageFile.remove for the errnos); rename is `RBD.rename`,
    replacing an existing target image by removing it first (not atomic: a crash in
    between loses the target). Objects of the pool that are not images are never shown.

    Namespaces (only in the pool's default namespace: they do not nest): mkdir is `rbd
    namespace create`, rmdir `rbd namespace remove` (ENOTEMPTY while images are in it or
    in its trash); an image and a namespace of the same name show as the image (the
    namespace is then reachable with the mount option namespace=). rmdir of an image name
    gives ENOTDIR. Namespace directories store no record: they show the mount's defaults.
    """

    def __init__(self, fs: MountContext, pool: str) -> None:
        super().__init__(fs, NodeKey(IMAGE_POOL, pool, namespace=fs.namespace))
        self.pool = pool
        self.namespace = fs.namespace   # the RBD namespace shown ("" = the default one)

    @property
    def spec(self) -> str:
        return self.fs.images.spec(self.pool)

    def file_node(self, name: str, image_id: str) -> FileNode:
        return self.kinds.image_file(self.pool, name, image_id)

    @property
    def is_pool_root(self) -> bool:
        """The pool's own directory, not an RBD namespace's below it (a quota is the
        whole pool's: tree/pool_xattrs.py)."""
        return self.namespace == self.fs.options.namespace

    async def _namespace_dir(self, name: str) -> DirNode:
        return await self.kinds.in_namespace(name).pool(self.pool)

    async def lookup(self, name: str) -> Node:
        check_component(name)
        if name == SNAPDIR:
            return self.kinds.snap_root(self.pool, images=True)
        io = await self.fs.images.ioctx(self.pool)
        try:
            image_id = await image_id_of(self.fs.bridge, io, name)
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self.fs.table.drop(image_key(self.pool, name, namespace=self.namespace))
            if not self.namespace and await self.fs.images.namespace_exists(self.pool, name):
                return await self._namespace_dir(name)
            raise RadosFSError(errno.ENOENT, f"no image {self.fs.images.spec(self.pool, name)}"
                               ) from None
        return self.file_node(name, image_id)

    async def entries(self):
        io = await self.fs.images.ioctx(self.pool)
        images = await self.fs.images.list_images(self.pool)
        images = sorted((i for i in images if i.get("id") and valid_path_name(i["name"])
                         and "/" not in i["name"]), key=lambda i: i["name"])
        bridge = self.fs.bridge
        if not self.namespace:
            dirs = await self._namespace_entries({i["name"] for i in images})
            if dirs:
                yield dirs
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

    async def _namespace_entries(self, image_names: set[str]) -> list[Entry]:
        """One directory per RBD namespace; one whose name is an image's (or `.snap`, or
        no path name) is not shown, with one log line."""
        batch: list[Entry] = []
        hidden = []
        for ns in sorted(await self.fs.images.list_namespaces(self.pool)):
            if ns in image_names or ns == SNAPDIR or not shows_as_component(ns.encode()):
                hidden.append(ns)
                continue
            node = await self._namespace_dir(ns)
            batch.append((ns, node, await node.attributes()))
        if hidden:
            log.info("pool %s: RBD namespace(s) %s not shown (the name of an image, or not "
                     "a file name; mount with namespace=NAME to see one)", self.pool,
                     ", ".join(repr(n) for n in hidden))
        return batch

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
        """Remove an empty RBD namespace (`rbd namespace remove`)."""
        node = await self.lookup(name)
        if isinstance(node, FileNode):
            raise RadosFSError(errno.ENOTDIR, f"{self.fs.images.spec(self.pool, name)} is an "
                                              f"image, not a directory")
        if name == SNAPDIR:
            raise RadosFSError(errno.EPERM, "the snapshot directory cannot be removed")
        await self.fs.images.remove_namespace(self.pool, name)
        self.fs.table.drop(node.key)
        log.info("removed RBD namespace %s/%s", self.pool, name)

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """A new RBD namespace (`rbd namespace create POOL/NAME`); `owner` is not stored
        (namespace directories show the mount's defaults)."""
        check_component(name)
        if self.namespace:
            raise RadosFSError(errno.EPERM, f"{self.spec} is an RBD namespace: namespaces "
                                            f"do not nest")
        if name == SNAPDIR:
            raise RadosFSError(errno.EEXIST, f"{name} is the snapshot directory")
        if await self.find(name) is not None:
            raise RadosFSError(errno.EEXIST, f"{self.pool}/{name} exists")
        await self.fs.images.create_namespace(self.pool, name)
        log.info("created RBD namespace %s/%s", self.pool, name)
        return await self.lookup(name)

    async def rename(self, old: str, new_parent: DirNode, new: str, flags: int) -> None:
        """Rename image `old` to `new` in this pool (`RBD.rename`).

        An existing `new` is removed first unless `flags` has RENAME_NOREPLACE (EEXIST).
        The inode of `old` becomes the file at `new`; open handles keep working (the image
        is open by id).
        """
        if new_parent is not self:
            raise RadosFSError(errno.EXDEV, "images move only within their pool and "
                                            "namespace")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise RadosFSError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        check_component(new)
        node = await self.lookup(old)
        if not isinstance(node, FileNode):
            raise RadosFSError(errno.EXDEV, "RBD namespaces cannot be renamed")
        if old == new:
            return
        target = await self.rename_target(new, flags)   # EISDIR for a namespace
        if isinstance(target, FileNode):
            await target.remove()
            self.fs.table.drop(target.key)
        await self.fs.images.rename_image(self.pool, old, new)
        new_key = image_key(self.pool, new, namespace=self.namespace)
        self.fs.table.drop(new_key)
        self.fs.table.rekey(node, new_key)  # its name is its key's
        self.fs.images.renamed(node.backend_key, new)
