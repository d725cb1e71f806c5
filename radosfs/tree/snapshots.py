"""`.snap` in every pool directory, CephFS-style.

`.snap` is not listed by readdir (so `cp -r`, `rsync` and `find` don't walk into every
snapshot) but is reachable by name. `mkdir .snap/NAME` takes a snapshot, `rmdir` removes
it; everything under a snapshot is read-only (EROFS).

* object pool: `.snap/NAME/` is the whole pool at RADOS pool snapshot NAME (a `PoolDir`
  with a `PoolView`);
* image pool: `.snap/NAME/` lists every image that has a snapshot NAME (`ImageSnapshot`).

Before a snapshot is taken, every dirty page of that pool is written back, so the
snapshot holds everything written through the mount before `mkdir` was called.
"""
from __future__ import annotations

import errno
import json
import logging
import time

import rados

from ..errors import RadosFSError, errno_of
from ..store.image_snaps import SnapMember, remove_snapshots, snapshot_all, snapshots_by_name
from ..store.keys import IMAGE, OBJECT
from ..store.ownership import NO_OVERRIDE, Ownership
from .base import DirNode, Entry, FileNode, Node
from .context import MountContext
from .inodes import IMAGE_SNAP, NodeKey, SNAP_ROOT
from .pool_state import BTIME_XATTR, PoolView, btime

log = logging.getLogger(__name__)


def check_snap_name(name: str) -> None:
    """CephFS's rule: no empty names and none starting with '_' (EINVAL)."""
    if not name or name.startswith("_"):
        raise RadosFSError(errno.EINVAL, f"bad snapshot name {name!r}: empty or starts "
                                         f"with '_'")
    if "/" in name or name in (".", ".."):
        raise RadosFSError(errno.EINVAL, f"bad snapshot name {name!r}")


async def pool_is_selfmanaged(fs: MountContext, pool: str) -> bool:
    """Whether a pool uses self-managed (RBD) snapshots, so pool snapshots are refused."""
    out = await fs.conn.mon_command({"prefix": "osd dump", "format": "json"})
    for p in json.loads(out).get("pools", []):
        if p.get("pool_name") == pool:
            return "selfmanaged_snaps" in p.get("flags_names", "")
    return False


def pool_view(snap: rados.Snap) -> PoolView:
    return PoolView(snap.name, snap.snap_id, snap.get_timestamp())


class SnapRoot(DirNode):
    """`.snap` itself: mkdir and rmdir take and remove snapshots (each kind its own way);
    nothing else can be made, removed or renamed in it."""
    snapshot_names = True

    def __init__(self, fs: MountContext, pool: str) -> None:
        super().__init__(fs, NodeKey(SNAP_ROOT, pool, namespace=fs.namespace))
        self.pool = pool

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> FileNode:
        raise RadosFSError(errno.EROFS, "snapshots are read-only")

    async def unlink(self, name: str) -> None:
        raise RadosFSError(errno.EROFS, "snapshots are read-only")


class PoolSnapRoot(SnapRoot):
    """`.snap` of an object pool: one directory per RADOS pool snapshot."""

    async def _snaps(self) -> list[rados.Snap]:
        io = await self.fs.conn.ioctx(self.pool)
        await self.fs.conn.latest_osdmap()  # `rados mksnap` elsewhere just now
        return await self.fs.bridge.run(lambda: list(io.list_snaps()))

    def _snap_node(self, snap: rados.Snap) -> DirNode:
        # Keyed by name *and* id: a snapshot removed and made again under the same name is
        # a different tree (new nodes, new ioctx, nothing cached from the old one).
        return self.kinds.pool_dir(self.pool, "", pool_view(snap))

    async def _find(self, name: str) -> rados.Snap:
        for snap in await self._snaps():
            if snap.name == name:
                return snap
        raise RadosFSError(errno.ENOENT, f"no snapshot {name} of pool {self.pool}")

    async def lookup(self, name: str) -> Node:
        return self._snap_node(await self._find(name))

    async def entries(self):
        batch: list[Entry] = []
        for snap in await self._snaps():
            node = self._snap_node(snap)
            batch.append((snap.name, node, await node.attributes()))
        yield batch

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """A snapshot (`owner` does not apply: snapshots are read-only)."""
        check_snap_name(name)
        io = await self.fs.conn.ioctx(self.pool)
        if any(s.name == name for s in await self._snaps()):
            raise RadosFSError(errno.EEXIST, f"snapshot {name} of pool {self.pool} exists")
        # Everything written through the mount before mkdir belongs in the snapshot.
        await self.fs.cache.flush_where(lambda key: key.at_head_of(OBJECT, self.pool))
        try:
            await self.fs.bridge.run(io.create_snap, name)
        except rados.Error as exc:
            if errno_of(exc) == errno.EINVAL and await pool_is_selfmanaged(self.fs, self.pool):
                raise RadosFSError(errno.EINVAL, f"pool {self.pool} uses self-managed (RBD) "
                                   f"snapshots; the cluster refuses pool snapshots in it")
            raise
        idx = self.fs.pool_index(self.pool)
        idx.has_snaps, idx.snaps_checked = True, time.monotonic()  # listings must stat now
        log.info("took pool snapshot %s of %s", name, self.pool)
        return await self.lookup(name)

    async def rmdir(self, name: str) -> None:
        io = await self.fs.conn.ioctx(self.pool)
        ident = pool_view(await self._find(name)).ident  # (no timestamp once removed)
        await self.fs.bridge.run(io.remove_snap, name)
        # The ioctx reading at it stays open: files of the snapshot may still be open,
        # and they now get ENOENT from the cluster instead of a closed handle.
        self.fs.table.drop_where(lambda k: k.pool == self.pool and k.view == ident)
        self.fs.pool_index(self.pool).snaps_checked = -1e9
        log.info("removed pool snapshot %s of %s", name, self.pool)


# ---- image pools ------------------------------------------------------------------------

class ImageSnapRoot(SnapRoot):
    """`.snap` of an image pool: one directory per snapshot name found on any image.

    `mkdir .snap/NAME` takes a snapshot NAME of every image in the pool (after writing back
    the pool's dirty pages); `rmdir` removes NAME from every image that has it (a protected
    snapshot, or one with clones, gives EBUSY and the log names the image).
    """

    async def snapshots(self) -> dict[str, list[SnapMember]]:
        return await snapshots_by_name(self.fs.bridge, await self.fs.images.ioctx(self.pool))

    def _snap_node(self, name: str, members: list[SnapMember]) -> DirNode:
        return self.kinds.image_snapshot(self.pool, name, members)

    async def lookup(self, name: str) -> Node:
        members = (await self.snapshots()).get(name)
        if not members:
            raise RadosFSError(errno.ENOENT, f"no image in {self.pool} has snapshot {name}")
        return self._snap_node(name, members)

    async def entries(self):
        batch: list[Entry] = []
        for name, members in sorted((await self.snapshots()).items()):
            node = self._snap_node(name, members)
            batch.append((name, node, await node.attributes()))
        yield batch

    async def mkdir(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        """A snapshot (`owner` does not apply: snapshots are read-only)."""
        check_snap_name(name)
        if name in await self.snapshots():
            raise RadosFSError(errno.EEXIST, f"snapshot {name} exists in pool {self.pool}")
        await self.fs.cache.flush_where(lambda key: key.at_head_of(IMAGE, self.pool))
        n = await snapshot_all(self.fs.bridge, await self.fs.images.ioctx(self.pool), name)
        if n == 0:
            raise RadosFSError(errno.ENOENT, f"pool {self.pool} has no images to snapshot")
        log.info("took snapshot %s of %d images in %s", name, n,
                 self.fs.images.spec(self.pool))
        return await self.lookup(name)

    async def rmdir(self, name: str) -> None:
        members = (await self.snapshots()).get(name)
        if not members:
            raise RadosFSError(errno.ENOENT, f"no image in {self.pool} has snapshot {name}")
        await remove_snapshots(self.fs.bridge, await self.fs.images.ioctx(self.pool), name,
                               members)
        self.fs.table.drop_where(lambda k: k.kind == IMAGE_SNAP and k.pool == self.pool
                                 and k.view == name)
        log.info("removed snapshot %s from the images of %s", name,
                 self.fs.images.spec(self.pool))


class ImageSnapshot(DirNode):
    """`.snap/NAME` of an image pool: each image that has snapshot NAME, read-only."""
    read_only = True

    def __init__(self, fs: MountContext, pool: str, name: str) -> None:
        super().__init__(fs, NodeKey(IMAGE_SNAP, pool, name, namespace=fs.namespace))
        self.pool = pool
        self.snap = name
        self.members: list[SnapMember] = []

    def update(self, members: list[SnapMember]) -> None:
        self.members = members
        self.stamp = min(m.stamp for m in members)
        self.virtual_xattrs = {BTIME_XATTR: btime(self.stamp)}

    def _file(self, m: SnapMember) -> FileNode:
        return self.kinds.image_file(self.pool, m.image, m.image_id, self.snap, m.snap_id)

    async def attributes(self):
        a = await super().attributes()
        if self.members:
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = int(self.stamp.timestamp() * 1e9)
        return a

    async def lookup(self, name: str) -> Node:
        for m in self.members:
            if m.image == name:
                return self._file(m)
        raise RadosFSError(errno.ENOENT, f"{self.pool}@{self.snap}/{name}")

    async def entries(self):
        batch: list[Entry] = []
        for m in sorted(self.members):
            node = self._file(m)
            batch.append((m.image, node, await node.attributes()))
        yield batch
