"""What one mount shares: the connection, the bridge, the page cache, the image pools, the
inode table and what is known of each object pool.

Built by the mount command and handed to every node (as `node.fs`). It imports no node
kind: `kinds` (the one place that builds nodes, tree/kinds.py) and `nursery` (the mount's
task nursery, for background work) are set on it from outside, S3QL-style.

A context is in one RADOS namespace (`namespace`: the mount's, from `namespace=`, or ""):
every ioctx, listing and image its `conn` and `images` hand out is in it, so a node never
names a namespace itself. `in_namespace` gives the view a node of another namespace gets
(`POOL/.ns/NS/`, an RBD namespace directory), sharing everything else.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any

import rados
import trio

from ..cache import PageCache
from ..client.bridge import Bridge
from ..client.connection import Connection
from ..metrics import RequestMetrics
from ..options import MountOptions
from ..store.image_pools import ImagePools
from ..store.keys import StoreKey
from ..store.ownership import PoolFlag, known_overrides, pool_has_overrides
from .inodes import InodeTable
from .pool_state import PoolIndex


# Applications whose pools radosfs leaves alone unless foreign_pools=rw: CephFS, RGW, the
# mgr (`.mgr`, `device_health_metrics`), NFS-Ganesha's config pool.
FOREIGN_APPS = {"cephfs", "rgw", "mgr", "mgr_devicehealth", "nfs"}
FOREIGN_NAMES = {".mgr", "device_health_metrics", ".nfs"}


class MountContext:
    def __init__(self, conn: Connection, options: MountOptions, cache: PageCache) -> None:
        self.conn = conn
        self.bridge: Bridge = conn.bridge
        self.options = options
        self.cache = cache
        self.table = InodeTable()
        self.mount_time = time.time()
        self.nursery: trio.Nursery | None = None
        self.kinds: Any = None   # tree.kinds.NodeKinds, set by whoever builds the tree
        self.images = ImagePools(conn, spawn=lambda: self.nursery, busy=self.busy)
        self._flags: dict[tuple[str, str], PoolFlag] = {}
        self._indexes: dict[tuple[str, str | None, str], PoolIndex] = {}
        self._foreign: dict[str, bool] = {}
        #: every FUSE request answered (operations.fuse_errors records them)
        self.requests = RequestMetrics()
        #: where the mount's metrics and admin socket are (set by the mount command)
        self.exported: dict[str, str | int | None] = {}
        self._views: dict[str, MountContext] = {self.namespace: self}

    @property
    def namespace(self) -> str:
        """The RADOS namespace this context works in ("" = the default one)."""
        return self.conn.namespace

    def in_namespace(self, namespace: str) -> MountContext:
        """This mount as seen from `namespace`: the same cache, inode table, nursery and
        pool knowledge; ioctxs, listings, images, indexes and pool flags of `namespace`."""
        view = self._views.get(namespace)
        if view is None:
            view = copy.copy(self)
            view.conn = self.conn.in_namespace(namespace)
            view.images = self.images.in_namespace(namespace)
            if self.kinds is not None:
                view.kinds = self.kinds.for_context(view)
            self._views[namespace] = view
        view.nursery = self.nursery
        return view

    async def classify_pool(self, pool: str) -> bool:
        """Whether `pool` belongs to another application (asked once per pool)."""
        known = self._foreign.get(pool)
        if known is None:
            if pool in FOREIGN_NAMES:
                known = True
            else:
                try:
                    apps = await self.conn.pool_applications(pool)
                except rados.Error:
                    apps = []
                known = bool(FOREIGN_APPS & set(apps))
            self._foreign[pool] = known
        return known

    def foreign_read_only(self, pool: str | None) -> bool:
        return (pool is not None and self.options.foreign_pools == "ro"
                and self._foreign.get(pool, pool in FOREIGN_NAMES))

    async def pool_shown(self, pool: str) -> bool:
        """pools= and foreign_pools=hide: whether the mount shows `pool` at all."""
        if self.options.pools and pool not in self.options.pools:
            return False
        if self.options.foreign_pools == "hide":
            return not await self.classify_pool(pool)
        return True

    def busy(self, key: StoreKey) -> bool:
        """Whether the cache holds the stored file open or with data not yet written."""
        f = self.cache.get(key)
        return f is not None and f.in_use

    def pool_index(self, pool: str, view: str | None = None) -> PoolIndex:
        """Which directories a pool (or a pool snapshot) has; see pool_state.PoolIndex."""
        key = (pool, view, self.namespace)
        idx = self._indexes.get(key)
        if idx is None:
            idx = self._indexes[key] = PoolIndex()
        return idx

    def pool_flag(self, pool: str) -> PoolFlag:
        """The flag object `.radosfs-attrs` of the pool in our namespace (one each)."""
        key = (pool, self.namespace)
        flag = self._flags.get(key)
        if flag is None:
            flag = self._flags[key] = PoolFlag()
        return flag

    async def has_overrides(self, pool: str) -> bool:
        """Whether objects of `pool` may carry mode/owner overrides (see ownership.py).

        Asked of HEAD whichever view asks (a snapshot's ioctx would not see a flag made
        after it, and the answer is cached for the pool): the flag is never removed, so
        with it at HEAD a record may be there at any snapshot too."""
        head = await self.conn.ioctx(pool)
        return await pool_has_overrides(self.bridge, head, self.pool_flag(pool))

    def overrides_known(self, pool: str) -> bool | None:
        """`has_overrides` as far as it is known without a round trip (None: not)."""
        return known_overrides(self.pool_flag(pool))

    def counters(self) -> dict:
        o = self.options
        return {"mount": {"pid": os.getpid(), "ro": o.ro, "log": o.log, "name": o.name,
                          "conf": o.conf, "mon_host": o.mon_host, "cluster": o.cluster,
                          "pools": o.pools or None, "foreign_pools": o.foreign_pools,
                          "namespace": o.namespace,
                          "cache_size": o.cache_size, "since": int(self.mount_time),
                          **self.exported},
                "cache": self.cache.counters(),
                "inodes": {"known": len(self.table.by_ino), "names": len(self.table.by_key),
                           "kernel_refs": sum(self.table.lookups.values())},
                "rados": dict(self.bridge.stats, ops_in_flight=self.bridge.throttle.ops,
                              bytes_in_flight=self.bridge.throttle.bytes),
                "requests": self.requests.counters()}
