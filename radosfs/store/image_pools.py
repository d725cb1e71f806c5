"""What the image pools of one mount share: which pools are rbd pools, one ioctx and header
probe per pool, and one `ImageBackend` per image (and snapshot view), closed at umount.

Also the pool-level librbd calls (list, create, remove, rename images), each in a worker
thread, with librbd's exceptions turned into the errnos a filesystem caller expects.
"""
from __future__ import annotations

import copy
import errno
import logging
import math
import time
from typing import Callable

import rados
import rbd
import trio

from ..client.connection import Connection
from ..errors import RadosFSError, errno_of
from .image_backend import HeaderProbe, ImageBackend
from .keys import StoreKey

log = logging.getLogger(__name__)

NEGATIVE_APP_TTL = 5.0           # seconds a "not an rbd pool" answer is trusted
# rmdir of an RBD namespace whose images were just unlinked waits this long (polling) for
# their purge from its trash (librbd refuses to remove a namespace with a non-empty trash)
TRASH_WAIT, TRASH_POLL = 15.0, 0.25


def _image_exists(io: rados.Ioctx, name: str) -> bool:
    """Whether image `name` is there (blocking)."""
    try:
        rbd.Image(io, name, read_only=True).close()
    except rbd.ImageNotFound:
        return False
    return True


class PoolContext:
    """What the images of one pool share: the pool's ioctx and a header probe."""

    def __init__(self, pool: str, ioctx: rados.Ioctx, probe: HeaderProbe) -> None:
        self.pool = pool
        self.ioctx = ioctx
        self.probe = probe


class ImagePools:
    """Image-pool state of one mount. `spawn()` gives the mount's nursery (or None) for the
    backends' idle closers; `busy(key)` says whether the cache still needs an image open.

    Its images are those of the connection's namespace: an RBD namespace is a RADOS
    namespace (librbd keeps its directory, headers and data objects there), so librbd
    given an ioctx in namespace NS works in RBD namespace NS, as `rbd --namespace NS`.
    `in_namespace` gives a view in another one, sharing all state."""

    def __init__(self, conn: Connection, spawn: Callable[[], trio.Nursery | None],
                 busy: Callable[[StoreKey], bool]) -> None:
        self.conn = conn
        self.bridge = conn.bridge
        self._spawn = spawn
        self._busy = busy
        self._apps: dict[str, tuple[bool, float]] = {}
        self._pools: dict[tuple[str, str], PoolContext] = {}
        self._pool_lock = trio.Lock()
        self._backends: dict[StoreKey, ImageBackend] = {}

    @property
    def namespace(self) -> str:
        return self.conn.namespace

    def in_namespace(self, namespace: str) -> ImagePools:
        """The images of RBD namespace `namespace` of every pool (shares all state)."""
        if namespace == self.namespace:
            return self
        view = copy.copy(self)
        view.conn = self.conn.in_namespace(namespace)
        return view

    def spec(self, pool: str, name: str = "") -> str:
        """POOL[/NAMESPACE][/NAME] as the rbd CLI writes it (for log lines and errors)."""
        return "/".join(p for p in (pool, self.namespace, name) if p)

    async def context(self, pool: str) -> PoolContext:
        key = (pool, self.namespace)
        ctx = self._pools.get(key)
        if ctx is None:
            async with self._pool_lock:
                ctx = self._pools.get(key)
                if ctx is None:
                    io = await self.conn.ioctx(pool)
                    probe_io = await self.conn.open_ioctx(pool)
                    ctx = self._pools[key] = PoolContext(pool, io, HeaderProbe(probe_io))
        return ctx

    async def ioctx(self, pool: str) -> rados.Ioctx:
        return (await self.context(pool)).ioctx

    async def is_rbd_pool(self, pool: str) -> bool:
        """Whether the pool's application list includes 'rbd'.

        A yes is cached for the mount; a no only for NEGATIVE_APP_TTL seconds, so that
        `rbd pool init` on a pool the mount has already seen takes effect quickly.
        """
        known = self._apps.get(pool)
        now = time.monotonic()
        if known is not None and (known[0] or now - known[1] < NEGATIVE_APP_TTL):
            return known[0]
        try:
            apps = await self.conn.pool_applications(pool)
            if "rbd" not in apps:
                # The list comes from our copy of the osdmap, which can lag behind the
                # monitors: `ceph osd pool create` + `rbd pool init` are two epochs, and we
                # may hold the first. Make sure a "no" is not just stale before trusting it.
                await self.conn.latest_osdmap()
                apps = await self.conn.pool_applications(pool)
        except Exception as exc:  # noqa: BLE001 -- e.g. the pool just went away
            if errno_of(exc) != errno.ENOENT:
                raise
            apps = []
        yes = "rbd" in apps
        self._apps[pool] = (yes, now)
        return yes

    async def backend(self, pool: str, image_id: str, name: str, snapshot: str | None = None,
                      snap_id: int | None = None) -> ImageBackend:
        """The one backend of an image (or of a snapshot view of it) in this mount."""
        key = StoreKey.image(pool, image_id, snapshot, snap_id, self.namespace)
        b = self._backends.get(key)
        if b is None:
            ctx = await self.context(pool)
            b = self._backends.get(key)
            if b is None:
                b = self._backends[key] = ImageBackend(
                    self.bridge, ctx.ioctx, pool, image_id, snapshot, probe=ctx.probe,
                    spawn=self._spawn, busy=lambda: self._busy(key), name=name,
                    snap_id=snap_id)
        return b

    def renamed(self, key: StoreKey, name: str) -> None:
        b = self._backends.get(key)
        if b is not None:
            b.name = name

    async def close_backend(self, key: StoreKey) -> None:
        """Close an image's backend (before the image is removed: our own watch would make
        the removal refuse). It stays this image's one backend: a removal that is refused
        (EBUSY) leaves the cached file using it, and a second backend would be a second
        librbd handle of the image in this mount, each with its own idea of the size (see
        image_backend.py: the one not holding the exclusive lock fails writes with EINVAL).
        """
        b = self._backends.get(key)
        if b is not None:
            await b.close()

    def forget_backend(self, key: StoreKey) -> None:
        """The image is gone (removed): drop its backend, which must be closed."""
        self._backends.pop(key, None)

    # ---- pool-level librbd calls -------------------------------------------------------

    async def list_images(self, pool: str) -> list[dict]:
        io = await self.ioctx(pool)
        return await self.bridge.run(lambda: list(rbd.RBD().list2(io)))

    async def create_image(self, pool: str, name: str) -> None:
        """A 0-byte image with librbd's default order and features (`rbd create --size 0`);
        one that exists already (another creator won the race) is left as it is."""
        io = await self.ioctx(pool)
        try:
            await self.bridge.run(rbd.RBD().create, io, name, 0)
        except rbd.ImageExists:
            pass
        except rbd.ObjectNotFound:
            if not self.namespace:
                raise
            log.warning("pool %s has no RBD namespace %s: no image can be made in it (rbd "
                        "namespace create %s)", pool, self.namespace, self.spec(pool))
            raise RadosFSError(errno.ENOENT, f"no RBD namespace {self.spec(pool)}",
                               logged=True) from None

    async def remove_image(self, pool: str, name: str) -> None:
        """Remove an image: the name goes at once, the data in the background.

        `RBD.remove` takes time proportional to the image's *size* (librbd walks the
        object map: 30 s of CPU for 100 TiB here), so unlink instead checks what remove
        would refuse (snapshots -> EBUSY: unlink(2) has no ENOTEMPTY, remove them with `rbd
        snap purge`; another client has it open (watchers) -> EBUSY), moves the image to
        the pool's trash (a few metadata updates) and hands the purge to the mgr's
        rbd_support module (`ceph rbd task add trash remove`); if the mgr cannot take it,
        the mount purges it itself in the background. A client that opens the image
        between the check and the move keeps it in the trash (`rbd trash ls`).

        At a pool quota (or on a full cluster) librbd cannot remove an image at all, `rbd
        rm` neither: every removal goes through the trash, whose trash_add is refused
        (EDQUOT), and the rolled-back move says ENOENT for the image that is still there.
        That gives EDQUOT here, with a line saying what to do."""
        io = await self.ioctx(pool)
        spec = self.spec(pool, name)

        def trash() -> None:
            try:
                rbd.RBD().trash_move(io, name, 0)
            except rbd.ImageNotFound:
                if not _image_exists(io, name):
                    raise
                raise RadosFSError(errno.EDQUOT, f"image {pool}/{name} cannot be removed "
                                   "at the pool's quota or on a full cluster (RBD's trash "
                                   "takes a write): raise the quota first") from None

        def check_and_trash() -> str:
            try:
                image = rbd.Image(io, name, read_only=True)
            except rbd.ImageNotFound:
                raise RadosFSError(errno.ENOENT, f"no image {spec}") from None
            try:
                if list(image.list_snaps()):
                    raise RadosFSError(errno.EBUSY, f"image {spec} has snapshots "
                                                    f"(rbd snap purge first)")
                if list(image.watchers_list()):
                    raise RadosFSError(errno.EBUSY, f"image {spec} is open by "
                                                    f"another client (rbd status)")
                image_id = image.id()
            finally:
                image.close()
            trash()
            return image_id

        image_id = await self.bridge.run(check_and_trash, what=f"remove image {spec}")
        try:
            await self.conn.mgr_command({"prefix": "rbd task add trash remove",
                                         "image_id_spec": self.spec(pool, image_id)})
            log.debug("image %s (id %s): purge handed to the mgr", spec, image_id)
            return
        except Exception as exc:  # noqa: BLE001 -- purge it ourselves
            log.warning("image %s moved to the trash; the mgr did not take its purge "
                        "(%s): purging it in the background", spec, exc)
        nursery = self._spawn()
        if nursery is not None:
            nursery.start_soon(self._purge, io, spec, image_id)

    async def _purge(self, io: rados.Ioctx, spec: str, image_id: str) -> None:
        try:
            # Proportional to the image size, in the background: no op_timeout.
            await self.bridge.run(rbd.RBD().trash_remove, io, image_id, timeout=math.inf,
                                  what=f"purge of image {spec}")
        except Exception as exc:  # noqa: BLE001 -- it stays in the trash
            log.error("image %s (id %s) stays in the trash: %s (rbd trash rm)",
                      spec, image_id, exc)

    async def rename_image(self, pool: str, old: str, new: str) -> None:
        io = await self.ioctx(pool)
        try:
            await self.bridge.run(rbd.RBD().rename, io, old, new)
        except rbd.ImageExists:
            raise RadosFSError(errno.EEXIST, f"{self.spec(pool, new)} was created "
                                             f"meanwhile") from None

    # ---- RBD namespaces (`rbd namespace ...`) -----------------------------------------
    # Registered in the pool's default namespace (object rbd_namespace), whatever ours.

    async def _pool_ioctx(self, pool: str) -> rados.Ioctx:
        return await self.conn.in_namespace("").ioctx(pool)

    async def list_namespaces(self, pool: str) -> list[str]:
        """The RBD namespaces of the pool (`rbd namespace ls POOL`)."""
        io = await self._pool_ioctx(pool)
        return await self.bridge.run(lambda: list(rbd.RBD().namespace_list(io)),
                                     what=f"RBD.namespace_list of {pool}")

    async def namespace_exists(self, pool: str, namespace: str) -> bool:
        io = await self._pool_ioctx(pool)
        return await self.bridge.run(rbd.RBD().namespace_exists, io, namespace,
                                     what=f"RBD.namespace_exists {pool}/{namespace}")

    async def create_namespace(self, pool: str, namespace: str) -> None:
        """`rbd namespace create POOL/NS`; EEXIST if it exists."""
        io = await self._pool_ioctx(pool)
        try:
            await self.bridge.run(rbd.RBD().namespace_create, io, namespace,
                                  what=f"RBD.namespace_create {pool}/{namespace}")
        except rbd.ImageExists:
            raise RadosFSError(errno.EEXIST, f"RBD namespace {pool}/{namespace} "
                                             f"exists") from None

    async def remove_namespace(self, pool: str, namespace: str) -> None:
        """`rbd namespace remove POOL/NS`: only an empty one. Images in it, or in its
        trash (an image unlinked here stays there until the mgr has purged it), give
        ENOTEMPTY; librbd says EBUSY for both."""
        images = await self.in_namespace(namespace).list_images(pool)
        if images:
            raise RadosFSError(errno.ENOTEMPTY, f"RBD namespace {pool}/{namespace} holds "
                                                f"{len(images)} image(s)")
        io = await self._pool_ioctx(pool)
        trash_io = await self.in_namespace(namespace).ioctx(pool)
        deadline = trio.current_time() + TRASH_WAIT
        while True:
            try:
                await self.bridge.run(rbd.RBD().namespace_remove, io, namespace,
                                      what=f"RBD.namespace_remove {pool}/{namespace}")
                return
            except rbd.ImageBusy:
                pass
            except rbd.ImageNotFound:
                raise RadosFSError(errno.ENOENT, f"no RBD namespace {pool}/{namespace}"
                                   ) from None
            # No image, so its trash holds some: ours being purged (`rm dir/*; rmdir
            # dir`) go within seconds; any other stays.
            trash = await self.bridge.run(lambda: list(rbd.RBD().trash_list(trash_io)),
                                          what=f"RBD.trash_list {pool}/{namespace}")
            if trash and trio.current_time() < deadline:
                await trio.sleep(TRASH_POLL)
                continue
            raise RadosFSError(errno.ENOTEMPTY, f"RBD namespace {pool}/{namespace} is not "
                               f"empty: {len(trash)} image(s) in its trash (rbd trash ls "
                               f"{pool}/{namespace})")

    async def close_all(self) -> None:
        """Close every image and probe ioctx this mount opened.

        Call at umount, after `cache.flush_all()` and before `Rados.shutdown()`: an
        `rbd.Image` still open at shutdown makes its (blocking) close hang forever, and
        holds its watch/exclusive lock on the cluster until the OSD times the watch out.
        """
        for backend in list(self._backends.values()):
            try:
                await backend.close()
            except Exception as exc:  # noqa: BLE001 -- close the others anyway
                log.error("closing image %s: %r", backend.key, exc)
        for ctx in list(self._pools.values()):
            await self.bridge.run(ctx.probe.close)
        self._pools.clear()
