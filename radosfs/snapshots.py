"""`.snap` in every pool directory, CephFS-style.

`.snap` is not listed by readdir (so `cp -r`, `rsync` and `find` don't walk into every
snapshot) but is reachable by name. `mkdir .snap/NAME` takes a snapshot, `rmdir` removes
it; everything under a snapshot is read-only (EROFS).

* object pool: `.snap/NAME/` is the whole pool at RADOS pool snapshot NAME;
* image pool: `.snap/NAME/` lists every image that has a snapshot NAME (see images.py).

Before a snapshot is taken, every dirty page of that pool is written back, so the
snapshot holds everything written through the mount before `mkdir` was called.
"""
from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING

import rados

from .errors import RadosFSError, errno_of
from .nodes import DirNode, Node
from .pooldir import PoolDir
from .ownership import NO_OVERRIDE, Ownership

if TYPE_CHECKING:
    from .filesystem import FileSystem

log = logging.getLogger(__name__)

BTIME_XATTR = "ceph.snap.btime"


def check_snap_name(name: str) -> None:
    """CephFS's rule: no empty names and none starting with '_' (EINVAL)."""
    if not name or name.startswith("_"):
        raise RadosFSError(errno.EINVAL, f"bad snapshot name {name!r}: empty or starts "
                                         f"with '_'")
    if "/" in name or name in (".", ".."):
        raise RadosFSError(errno.EINVAL, f"bad snapshot name {name!r}")


def btime(ts) -> bytes:
    """`ceph.snap.btime` as CephFS gives it: "secs.nsecs" (Samba's snapshot module)."""
    secs = ts.timestamp()
    whole = int(secs)
    return f"{whole}.{int(round((secs - whole) * 1e9)):09d}".encode()


async def pool_is_selfmanaged(fs: FileSystem, pool: str) -> bool:
    """Whether a pool uses self-managed (RBD) snapshots, so pool snapshots are refused."""
    import json
    out = await fs.conn.mon_command({"prefix": "osd dump", "format": "json"})
    for p in json.loads(out).get("pools", []):
        if p.get("pool_name") == pool:
            return "selfmanaged_snaps" in p.get("flags_names", "")
    return False


def snap_ident(snap) -> str:
    """A pool snapshot's identity inside the mount: its name and id."""
    return f"{snap.name}@{snap.snap_id}"


class SnapRoot(DirNode):
    """`.snap` itself: mkdir and rmdir take and remove snapshots (each kind its own way);
    nothing else can be made or removed in it."""
    is_snap_root = True

    async def create(self, name: str, owner: Ownership = NO_OVERRIDE) -> Node:
        raise RadosFSError(errno.EROFS, "snapshots are read-only")

    async def unlink(self, name: str) -> None:
        raise RadosFSError(errno.EROFS, "snapshots are read-only")


class ReadOnlyTree:
    """Mixin for everything under `.snap/NAME/`: no changes, EROFS."""

    async def mkdir(self, name: str, *_: object) -> Node:
        raise RadosFSError(errno.EROFS, "snapshots are read-only")

    rmdir = create = unlink = mkdir  # type: ignore[assignment]


class PoolSnapRoot(SnapRoot):
    """`.snap` of an object pool: one directory per RADOS pool snapshot."""

    def __init__(self, fs: FileSystem, pool: str) -> None:
        super().__init__(fs, ("snaproot", pool))
        self.pool = pool

    async def _snaps(self) -> list:
        io = await self.fs.conn.ioctx(self.pool)

        await self.fs.conn.latest_osdmap()  # `rados mksnap` elsewhere just now
        return await self.fs.bridge.run(lambda: list(io.list_snaps()))

    def _snap_node(self, snap) -> PoolSnapshot:
        # Keyed by name *and* id: a snapshot removed and made again under the same name is
        # a different tree (new nodes, new ioctx, nothing cached from the old one).
        return self.fs.table.get(("snapdir", self.pool, snap_ident(snap), ""),
                                 lambda: PoolSnapshot(self.fs, self.pool, snap))

    async def _find(self, name: str):
        for snap in await self._snaps():
            if snap.name == name:
                return snap
        raise RadosFSError(errno.ENOENT, f"no snapshot {name} of pool {self.pool}")

    async def lookup(self, name: str) -> Node:
        node = self._snap_node(await self._find(name))
        await node.open_ioctx()
        return node

    async def entries(self):
        batch = []
        for snap in await self._snaps():
            node = self._snap_node(snap)
            batch.append((snap.name, node, await node.attributes()))
        yield batch

    async def mkdir(self, name: str) -> Node:
        check_snap_name(name)
        io = await self.fs.conn.ioctx(self.pool)
        if any(s.name == name for s in await self._snaps()):
            raise RadosFSError(errno.EEXIST, f"snapshot {name} of pool {self.pool} exists")
        # Everything written through the mount before mkdir belongs in the snapshot.
        await self.fs.cache.flush_where(lambda key: key[0] == "obj" and key[1] == self.pool
                                        and key[2] is None)
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
        snap = await self._find(name)
        await self.fs.bridge.run(io.remove_snap, name)
        # The ioctx reading at it stays open: files of the snapshot may still be open,
        # and they now get ENOENT from the cluster instead of a closed handle.
        self.fs.table.drop_prefix(("snapdir", self.pool, snap_ident(snap)))
        self.fs.table.drop_prefix(("obj", self.pool, snap_ident(snap)))
        self.fs.pool_index(self.pool).snaps_checked = -1e9
        log.info("removed pool snapshot %s of %s", name, self.pool)



class PoolSnapshot(ReadOnlyTree, PoolDir):
    """The root of one pool snapshot: the pool as it was, read-only."""

    def __init__(self, fs: FileSystem, pool: str, snap) -> None:
        super().__init__(fs, pool, "", snap_ident(snap), None)
        self.snap_id = snap.snap_id
        self.stamp = snap.get_timestamp()
        self.virtual_xattrs = {BTIME_XATTR: btime(self.stamp)}

    async def open_ioctx(self) -> rados.Ioctx:
        if self._snap_ioctx is None:
            self._snap_ioctx = await self.fs.conn.snap_ioctx(self.pool, self.snap, self.snap_id)
        return self._snap_ioctx

    async def ioctx(self) -> rados.Ioctx:
        return await self.open_ioctx()

    async def attributes(self):
        a = await super().attributes()
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = int(self.stamp.timestamp() * 1e9)
        return a



# ---- image pools ------------------------------------------------------------------------

class ImageSnapRoot(SnapRoot):
    """`.snap` of an image pool: one directory per snapshot name found on any image.

    `mkdir .snap/NAME` takes a snapshot NAME of every image in the pool (after writing back
    the pool's dirty pages); `rmdir` removes NAME from every image that has it (a protected
    snapshot, or one with clones, gives EBUSY and the log names the image).
    """

    def __init__(self, fs: FileSystem, pool: str) -> None:
        super().__init__(fs, ("snaproot", pool))
        self.pool = pool

    async def _ioctx(self) -> rados.Ioctx:
        from .images import pool_context
        return (await pool_context(self.fs, self.pool)).ioctx

    async def snapshots(self) -> dict[str, list[tuple[str, str, object, int]]]:
        """{snapshot name: [(image name, image id, timestamp), ...]} over the pool."""
        import rbd
        io = await self._ioctx()

        def scan() -> dict[str, list[tuple[str, str, object, int]]]:
            out: dict[str, list[tuple[str, str, object, int]]] = {}
            for img in rbd.RBD().list2(io):
                try:
                    image = rbd.Image(io, img["name"], read_only=True)
                except rbd.ImageNotFound:
                    continue
                try:
                    for s in image.list_snaps():
                        out.setdefault(s["name"], []).append(
                            (img["name"], img["id"], image.get_snap_timestamp(s["id"]),
                             s["id"]))
                finally:
                    image.close()
            return out

        return await self.fs.bridge.run(scan)

    def _snap_node(self, name: str, members: list) -> ImageSnapshot:
        node = self.fs.table.get(("snapdir", self.pool, name, ""),
                                 lambda: ImageSnapshot(self.fs, self.pool, name))
        node.update(members)  # type: ignore[attr-defined]
        return node  # type: ignore[return-value]

    async def lookup(self, name: str) -> Node:
        members = (await self.snapshots()).get(name)
        if not members:
            raise RadosFSError(errno.ENOENT, f"no image in {self.pool} has snapshot {name}")
        return self._snap_node(name, members)

    async def entries(self):
        batch = []
        for name, members in sorted((await self.snapshots()).items()):
            node = self._snap_node(name, members)
            batch.append((name, node, await node.attributes()))
        yield batch

    async def mkdir(self, name: str) -> Node:
        import rbd
        check_snap_name(name)
        if name in await self.snapshots():
            raise RadosFSError(errno.EEXIST, f"snapshot {name} exists in pool {self.pool}")
        await self.fs.cache.flush_where(lambda key: key[0] == "rbd" and key[1] == self.pool
                                        and key[3] is None)
        io = await self._ioctx()

        def take() -> int:
            n = 0
            for img in rbd.RBD().list2(io):
                try:
                    image = rbd.Image(io, img["name"])
                except rbd.ImageNotFound:
                    continue
                try:
                    image.create_snap(name)
                    n += 1
                finally:
                    image.close()
            return n

        n = await self.fs.bridge.run(take)
        if n == 0:
            raise RadosFSError(errno.ENOENT, f"pool {self.pool} has no images to snapshot")
        log.info("took snapshot %s of %d images in %s", name, n, self.pool)
        return await self.lookup(name)

    async def rmdir(self, name: str) -> None:
        import rbd
        members = (await self.snapshots()).get(name)
        if not members:
            raise RadosFSError(errno.ENOENT, f"no image in {self.pool} has snapshot {name}")
        io = await self._ioctx()

        def remove() -> None:
            # Check every image first: a refusal must not leave the snapshot half removed.
            for image_name, _, _, _ in members:
                try:
                    image = rbd.Image(io, image_name, read_only=True)
                except rbd.ImageNotFound:
                    continue
                try:
                    if image.is_protected_snap(name):
                        raise RadosFSError(errno.EBUSY, f"snapshot {image_name}@{name} is "
                                           f"protected: unprotect it first")
                finally:
                    image.close()
            for image_name, _, _, _ in members:
                try:
                    image = rbd.Image(io, image_name)
                except rbd.ImageNotFound:
                    continue
                try:
                    image.remove_snap(name)
                except (rbd.ImageBusy, rbd.InvalidArgument) as exc:
                    raise RadosFSError(errno.EBUSY, f"snapshot {image_name}@{name} is "
                                       f"protected or has clones: {exc}") from None
                except rbd.ImageNotFound:
                    pass
                finally:
                    image.close()

        await self.fs.bridge.run(remove)
        self.fs.table.drop_prefix(("snapdir", self.pool, name))
        log.info("removed snapshot %s from the images of %s", name, self.pool)



class ImageSnapshot(ReadOnlyTree, DirNode):
    """`.snap/NAME` of an image pool: each image that has snapshot NAME, read-only."""
    read_only = True

    def __init__(self, fs: FileSystem, pool: str, name: str) -> None:
        super().__init__(fs, ("snapdir", pool, name, ""))
        self.pool = pool
        self.snap = name
        self.members: list[tuple[str, str, object, int]] = []
        self.virtual_xattrs: dict[str, bytes] = {}

    def update(self, members: list[tuple[str, str, object, int]]) -> None:
        self.members = members
        first = min(m[2] for m in members)
        self.stamp = first
        self.virtual_xattrs = {BTIME_XATTR: btime(first)}

    def _file(self, name: str, image_id: str, snap_id: int) -> Node:
        from .images import ImageFile
        return self.fs.table.get(ImageFile.key_for(self.pool, name, self.snap, snap_id),
                                 lambda: ImageFile(self.fs, self.pool, name, image_id,
                                                   snapshot=self.snap, snap_id=snap_id))

    async def attributes(self):
        a = await super().attributes()
        if self.members:
            a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = int(self.stamp.timestamp() * 1e9)
        return a

    async def lookup(self, name: str) -> Node:
        for image_name, image_id, _, snap_id in self.members:
            if image_name == name:
                return self._file(name, image_id, snap_id)
        raise RadosFSError(errno.ENOENT, f"{self.pool}@{self.snap}/{name}")

    async def entries(self):
        batch = []
        for image_name, image_id, _, snap_id in sorted(self.members):
            node = self._file(image_name, image_id, snap_id)
            batch.append((image_name, node, await node.attributes()))
        yield batch

