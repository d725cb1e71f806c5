"""The mount root: one directory per pool, and the stats file."""
from __future__ import annotations

import errno
import logging

import rados

from ..errors import RadosFSError, errno_of
from ..store.ownership import FLAG_OBJECT, NO_OVERRIDE, Ownership
from .base import DirNode, Entry, FileNode, Node
from .context import MountContext
from .inodes import ROOT, NodeKey
from .names import check_component

log = logging.getLogger(__name__)

STATS_NAME = ".radosfs-stats"   # read-only JSON counters at the mount root
# `setfattr -n user.radosfs.flush -v 1 MOUNTPOINT` (what `radosfs flush` does): write back
# every dirty file of the mount; returns once RADOS has acknowledged all of it (EIO if any
# could not be written: they stay dirty and are retried, as after a failed close).
FLUSH_XATTR = "radosfs.flush"


class RootNode(DirNode):
    def __init__(self, fs: MountContext) -> None:
        super().__init__(fs, NodeKey(ROOT))

    async def lookup(self, name: str) -> Node:
        if name == STATS_NAME:
            return self.kinds.stats_file()
        if not await self.fs.conn.pool_exists(name):
            # Made by another client just now? Without the monitors we cannot tell: EIO.
            await self.fs.conn.latest_osdmap(required=True)
            if not await self.fs.conn.pool_exists(name):
                raise RadosFSError(errno.ENOENT, f"no pool {name}")
        if not await self.fs.pool_shown(name):
            raise RadosFSError(errno.ENOENT, f"pool {name} is not mounted (pools=, "
                                             f"foreign_pools=hide)")
        return await self.kinds.pool(name)

    async def entries(self):
        await self.fs.conn.latest_osdmap()  # pools made or removed elsewhere just now
        pools = await self.fs.conn.list_pools()
        batch: list[Entry] = []
        for name in sorted(pools):
            if not await self.fs.pool_shown(name):
                continue
            node = await self.kinds.pool(name)
            batch.append((name, node, await node.attributes()))
        yield batch

    async def set_xattr(self, key: str, value: bytes) -> None:
        if key != FLUSH_XATTR:
            raise RadosFSError(errno.ENOTSUP, "the mount root stores no xattrs")
        failed = await self.fs.cache.flush_all()
        log.info("flush asked: %s", f"{len(failed)} file(s) failed" if failed else "done")
        if failed:
            raise RadosFSError(errno.EIO, f"flush: {len(failed)} file(s) could not be "
                                          f"written back")

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """A new pool; a mode or owner asked for is stored as the pool directory's."""
        check_component(name)
        if self.fs.options.pools and name not in self.fs.options.pools:
            raise RadosFSError(errno.EPERM, f"pool {name} is not in pools= of this mount")
        if await self.fs.conn.pool_exists(name):
            raise RadosFSError(errno.EEXIST, f"pool {name} exists")
        await self.fs.conn.create_pool(name)
        log.info("created pool %s", name)
        node = await self.lookup(name)
        if owner.owner_only != NO_OVERRIDE:
            await node.set_ownership(owner.owner_only)
        return node

    async def rmdir(self, name: str) -> None:
        if not await self.fs.conn.pool_exists(name) or not await self.fs.pool_shown(name):
            raise RadosFSError(errno.ENOENT, f"no pool {name}")
        if self.fs.foreign_read_only(name):
            raise RadosFSError(errno.EROFS, f"pool {name} belongs to another application "
                                            f"(foreign_pools=rw to change it)")
        if not self.fs.options.allow_pool_delete:
            raise RadosFSError(errno.EPERM, f"pool {name} not removed: mount with "
                                            f"allow_pool_delete to remove pools")
        # Empty means no object in any namespace (a default-namespace listing would miss
        # the others), by a checked listing: one that fails raises, it never looks empty.
        # (Pool stats count every namespace too, but lag seconds behind the OSDs.)
        # radosfs's own flag object (store/ownership.py) does not make a pool non-empty.
        first = await self.fs.conn.list_names(name, all_namespaces=True, limit=2)
        if [n for n in first if n != FLAG_OBJECT.encode()]:
            raise RadosFSError(errno.ENOTEMPTY, f"pool {name} is not empty")
        try:
            await self.fs.conn.delete_pool(name)
        except rados.Error as exc:
            if errno_of(exc) == errno.EPERM:
                raise RadosFSError(errno.EPERM, f"the cluster refused to delete pool {name} "
                                                f"(mon_allow_pool_delete is false?)") from exc
            raise
        self.kinds.forget_pool(name)
        log.info("removed pool %s", name)

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        raise RadosFSError(errno.EPERM, "only pools (directories) live at the top level")
