"""The one place that builds nodes: every kind is made here, kept in the inode table under
its key, so no kind imports another (they ask `node.kinds`).

A NodeKinds builds the nodes of its context's namespace (keys carry it); `in_namespace`
gives the one of another namespace."""
from __future__ import annotations

import copy

from ..store.image_snaps import SnapMember
from .base import DirNode, FileNode, Kinds
from .context import MountContext
from .image_file import ImageFile
from .image_pool import ImagePool
from .inodes import (IMAGE_POOL, IMAGE_SNAP, NAMESPACES, OBJECT, POOL, SNAP_ROOT, STATS,
                     NodeKey, image_key)
from .namespaces import NamespacesDir
from .object_file import ObjectFile
from .pool_state import PoolView
from .pooldir import PoolDir
from .root import RootNode
from .snapshots import ImageSnapRoot, ImageSnapshot, PoolSnapRoot
from .stats import StatsFile


class NodeKinds(Kinds):
    def __init__(self, fs: MountContext) -> None:
        self.fs = fs
        self.table = fs.table
        self._root = RootNode(fs)
        self.table.add_root(self._root)

    def for_context(self, fs: MountContext) -> NodeKinds:
        """The kinds of `fs` (a namespace view of ours): same table and root."""
        view = copy.copy(self)
        view.fs = fs
        return view

    def in_namespace(self, namespace: str) -> NodeKinds:
        return self.fs.in_namespace(namespace).kinds

    def root(self) -> DirNode:
        return self._root

    async def pool(self, name: str) -> DirNode:
        await self.fs.classify_pool(name)   # before any node of it answers for its modes
        if await self.fs.images.is_rbd_pool(name):
            return self.table.get(NodeKey(IMAGE_POOL, name, namespace=self.fs.namespace),
                                  lambda: ImagePool(self.fs, name))
        return self.pool_dir(name, "")

    def pool_dir(self, pool: str, prefix: str, view: PoolView | None = None) -> DirNode:
        key = NodeKey(POOL, pool, view.ident if view is not None else None, prefix,
                      self.fs.namespace)
        return self.table.get(key, lambda: PoolDir(self.fs, pool, prefix, view))

    def namespaces(self, pool: str) -> DirNode:
        """`POOL/.ns`: the RADOS namespaces of an object pool."""
        return self.table.get(NodeKey(NAMESPACES, pool),
                              lambda: NamespacesDir(self.fs, pool))

    def object_file(self, pool: str, oid: str, view: PoolView | None = None) -> FileNode:
        key = NodeKey(OBJECT, pool, view.ident if view is not None else None, oid,
                      self.fs.namespace)
        return self.table.get(key, lambda: ObjectFile(self.fs, pool, oid, view))

    def snap_root(self, pool: str, images: bool) -> DirNode:
        kind = ImageSnapRoot if images else PoolSnapRoot
        key = NodeKey(SNAP_ROOT, pool, namespace=self.fs.namespace)
        node = self.table.get(key, lambda: kind(self.fs, pool))
        if not isinstance(node, kind):  # the pool became an image pool meanwhile
            self.table.drop(node.key)
            node = self.table.get(key, lambda: kind(self.fs, pool))
        return node

    def image_snapshot(self, pool: str, name: str, members: list[SnapMember]) -> DirNode:
        node = self.table.get(NodeKey(IMAGE_SNAP, pool, name, namespace=self.fs.namespace),
                              lambda: ImageSnapshot(self.fs, pool, name))
        node.update(members)
        return node

    def image_file(self, pool: str, name: str, image_id: str, snapshot: str | None = None,
                   snap_id: int | None = None) -> FileNode:
        key = image_key(pool, name, snapshot, snap_id, self.fs.namespace)
        node = self.table.by_key.get(key)
        if isinstance(node, ImageFile) and node.image_id != image_id:
            # Removed and created again (or renamed over) by another client: a new file.
            self.table.drop(key)
        return self.table.get(key, lambda: ImageFile(self.fs, pool, name, image_id,
                                                     snapshot, snap_id))

    def stats_file(self) -> FileNode:
        return self.table.get(NodeKey(STATS), lambda: StatsFile(self.fs, self.fs.counters))

    def forget_pool(self, pool: str) -> None:
        self.table.drop_where(lambda k: k.pool == pool)
