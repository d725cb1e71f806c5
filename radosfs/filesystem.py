"""What one mount shares: the connection, the bridge, the page cache, the inode table."""
from __future__ import annotations

import time

from .bridge import Bridge
from .cache import PageCache
from .connection import Connection
from .nodes import InodeTable, RootNode
from .pooldir import PoolIndex
from .options import MountOptions
from .ownership import PoolFlag, pool_has_overrides


class FileSystem:
    def __init__(self, conn: Connection, bridge: Bridge, options: MountOptions) -> None:
        self.conn = conn
        self.bridge = bridge
        self.options = options
        self.cache = PageCache(options.cache_size)
        self.table = InodeTable()
        self.mount_time = time.time()
        self._flags: dict[str, PoolFlag] = {}
        self._indexes: dict[tuple[str, str | None], PoolIndex] = {}
        self.root = RootNode(self)
        self.table.add_root(self.root)

    def pool_index(self, pool: str, snap: str | None = None) -> PoolIndex:
        """Which directories a pool (or a pool snapshot) has; see nodes.PoolIndex."""
        idx = self._indexes.get((pool, snap))
        if idx is None:
            idx = self._indexes[(pool, snap)] = PoolIndex()
        return idx

    def pool_flag(self, pool: str) -> PoolFlag:
        flag = self._flags.get(pool)
        if flag is None:
            flag = self._flags[pool] = PoolFlag()
        return flag

    async def has_overrides(self, pool: str, io) -> bool:
        """Whether objects of `pool` may carry mode/owner overrides (see ownership.py)."""
        return await pool_has_overrides(self.bridge, io, self.pool_flag(pool))

    def counters(self) -> dict:
        return {"cache": self.cache.counters(),
                "rados": dict(self.bridge.stats, ops_in_flight=self.bridge.throttle.ops,
                              bytes_in_flight=self.bridge.throttle.bytes)}
