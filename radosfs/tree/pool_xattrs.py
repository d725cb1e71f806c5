"""The xattrs every pool directory shows, object pool or image pool: its quota (settable,
`setfattr -n ceph.quota.max_bytes -v N POOL` = `ceph osd pool set-quota POOL max_bytes N`)
and its usage (see store/pool_quota.py). Not listed by listxattr, as CephFS lists none of
its `ceph.*` xattrs: `cp -a` and `rsync -X` of a pool directory do not copy them."""
from __future__ import annotations

import errno
import logging

from ..errors import RadosFSError
from ..store.pool_quota import (POOL_XATTRS, QUOTA_XATTRS, parse_quota, pool_quota,
                                set_pool_quota)
from .base import Node

log = logging.getLogger(__name__)


class PoolXattrs(Node):
    """Mixed into a pool directory's kind (first in its bases): `is_pool_root` says
    whether this node is the pool directory itself (at HEAD), not one below it."""
    pool: str

    @property
    def is_pool_root(self) -> bool:
        return True

    async def get_ceph_xattr(self, name: str) -> bytes:
        if not self.is_pool_root or name not in POOL_XATTRS:
            return await super().get_ceph_xattr(name)
        q = await pool_quota(self.fs.conn, self.pool)
        value = getattr(q, POOL_XATTRS[name])
        if name in QUOTA_XATTRS and value == 0:
            # CephFS's answer for a directory without that quota
            raise RadosFSError(errno.ENODATA, f"pool {self.pool} has no {name} quota")
        return str(value).encode()

    async def set_ceph_xattr(self, name: str, value: bytes) -> None:
        if not self.is_pool_root or name not in POOL_XATTRS:
            await super().set_ceph_xattr(name, value)
            return
        if name not in QUOTA_XATTRS:
            raise RadosFSError(errno.EPERM, f"{name} is the pool's usage: read-only")
        await self._set_quota(name, parse_quota(name, value))

    async def remove_ceph_xattr(self, name: str) -> None:
        if not self.is_pool_root or name not in QUOTA_XATTRS:
            await super().remove_ceph_xattr(name)
            return
        await self._set_quota(name, 0)

    async def _set_quota(self, name: str, value: int) -> None:
        await set_pool_quota(self.fs.conn, self.pool, QUOTA_XATTRS[name], value)
        log.info("pool %s: %s set to %d%s", self.pool, QUOTA_XATTRS[name], value,
                 " (no quota)" if value == 0 else "")
