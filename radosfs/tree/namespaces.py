"""`POOL/.ns/`: the RADOS namespaces of an object pool, one directory each.

RADOS namespaces need no creating: a namespace exists while it holds an object (`rados -N
NS put` makes one, removing its last object ends it). So `.ns/` lists the namespaces that
hold objects (one checked listing of every namespace), and `.ns/NAME/` is the pool seen
through `rados -N NAME`: the same kind of directory as the pool's own, in that namespace.

`.ns` is not listed by readdir (like `.snap`: `cp -r`, `rsync` and `find` of a pool copy
its default namespace, as `rados ls` lists it) but is reachable by name. `mkdir .ns/NAME`
makes the namespace exist by creating radosfs's flag object `.radosfs-attrs` in it;
`rmdir` removes an empty one (that flag object only), ENOTEMPTY otherwise. It is there
only in the pool's default namespace and without the mount option `namespace=`.
"""
from __future__ import annotations

import errno
import logging

from ..errors import RadosFSError
from ..store.ownership import FLAG_OBJECT, NO_OVERRIDE, Ownership, mark_pool
from .base import DirNode, Entry, FileNode, Node
from .context import MountContext
from .inodes import NAMESPACES, NodeKey
from .names import NSDIR, check_component, shows_as_component

log = logging.getLogger(__name__)


class NamespacesDir(DirNode):
    """`.ns` of an object pool: a directory per RADOS namespace holding objects."""

    def __init__(self, fs: MountContext, pool: str) -> None:
        super().__init__(fs, NodeKey(NAMESPACES, pool))
        self.pool = pool

    def _dir(self, name: str) -> DirNode:
        return self.kinds.in_namespace(name).pool_dir(self.pool, "")

    async def _names(self, name: str, limit: int) -> list[bytes]:
        """The first `limit` object names of namespace `name`, radosfs's flag left out."""
        conn = self.fs.conn.in_namespace(name)
        return [n for n in await conn.list_names(self.pool, limit=limit)
                if n != FLAG_OBJECT.encode()]

    async def lookup(self, name: str) -> Node:
        check_component(name)
        conn = self.fs.conn.in_namespace(name)
        if not await conn.list_names(self.pool, limit=1):
            raise RadosFSError(errno.ENOENT, f"pool {self.pool} has no object in namespace "
                                             f"{name}")
        return self._dir(name)

    async def entries(self):
        batch: list[Entry] = []
        hidden: list[bytes] = []
        for raw in sorted(await self.fs.conn.list_namespaces(self.pool)):
            if not raw:
                continue  # the default namespace is the pool directory itself
            if not shows_as_component(raw):
                hidden.append(raw)
                continue
            name = raw.decode()
            node = self._dir(name)
            batch.append((name, node, await node.attributes()))
        if hidden:
            log.info("pool %s: %d namespace(s) under /%s not shown (not file names; mount "
                     "with namespace=NAME to see one): %s", self.pool, len(hidden), NSDIR,
                     ", ".join(repr(r)[1:] for r in hidden[:3]))
        if batch:
            yield batch

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """Make namespace `name` exist (its flag object); `owner` is stored as the
        record of its top directory, as mkdir of a pool does."""
        check_component(name)
        view = self.fs.in_namespace(name)
        if await view.conn.list_names(self.pool, limit=1):
            raise RadosFSError(errno.EEXIST, f"namespace {name} of pool {self.pool} exists")
        io = await view.conn.ioctx(self.pool)
        await mark_pool(self.fs.bridge, io, view.pool_flag(self.pool))
        log.info("created namespace %s of pool %s", name, self.pool)
        node = self._dir(name)
        if owner.owner_only != NO_OVERRIDE:
            await node.set_ownership(owner.owner_only)
        return node

    async def rmdir(self, name: str) -> None:
        """Remove an empty namespace: its flag object, if that is all it holds."""
        node = await self.lookup(name)
        if await self._names(name, 2):
            raise RadosFSError(errno.ENOTEMPTY, f"namespace {name} of pool {self.pool} is "
                                                f"not empty")
        view = self.fs.in_namespace(name)
        io = await view.conn.ioctx(self.pool)
        try:
            await self.fs.bridge.aio(lambda cb: io.aio_remove(FLAG_OBJECT, cb))
        except RadosFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        flag = view.pool_flag(self.pool)
        flag.present, flag.checked = False, -1e9
        self.fs.table.drop(node.key)
        log.info("removed namespace %s of pool %s", name, self.pool)

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        raise RadosFSError(errno.EPERM, f"only namespaces (directories) live in {NSDIR}")

    async def unlink(self, name: str) -> None:
        await self.lookup(name)
        raise RadosFSError(errno.EISDIR, f"{self.pool}/{NSDIR}/{name} is a namespace")
