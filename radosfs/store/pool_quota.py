"""A pool's quota and usage, as `ceph osd pool get-quota` / `set-quota` have them.

The mount shows them as xattrs of the pool directory, with CephFS's names where CephFS has
one (docs/layout.md):

    ceph.quota.max_bytes     the pool's max_bytes quota (settable; 0 removes it)
    ceph.quota.max_objects   the pool's max_objects quota (settable; 0 removes it)
    ceph.pool.used_bytes     bytes stored in the pool (before replication), read-only
    ceph.pool.objects        objects in the pool, read-only

Why xattrs and not `df MNT/POOL`: the kernel sends statfs with the inode of the path, but
pyfuse3 (3.5) hands `Operations.statfs` no inode, so every statfs of a mount answers the
same. Usage comes from the PG stats the monitors gather: eventually consistent (seconds),
as `ceph df` is. A quota set to the same value twice is one no-op for the monitors.
"""
from __future__ import annotations

import errno
import json
from dataclasses import dataclass

from ..client.connection import Connection
from ..errors import RadosFSError

QUOTA_XATTRS = {"ceph.quota.max_bytes": "max_bytes",
                "ceph.quota.max_objects": "max_objects"}
USAGE_XATTRS = {"ceph.pool.used_bytes": "used_bytes", "ceph.pool.objects": "objects"}
POOL_XATTRS = {**QUOTA_XATTRS, **USAGE_XATTRS}
QUOTA_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class PoolQuota:
    """0 in a quota field means "no quota" (the monitors' own convention)."""
    max_bytes: int
    max_objects: int
    used_bytes: int
    objects: int


async def pool_quota(conn: Connection, pool: str) -> PoolQuota:
    """One `osd pool get-quota` (it also gives the pool's current usage).

    Trap: for a pool whose PGs have not reported stats yet (made seconds ago) the
    monitors answer ENOENT "no stats for pool"; its quotas are then read from the osdmap
    and its usage is 0."""
    try:
        out = await conn.mon_command({"prefix": "osd pool get-quota", "pool": pool,
                                      "format": "json"})
    except RadosFSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return await _from_osdmap(conn, pool)
    try:
        d = json.loads(out)
        return PoolQuota(int(d["quota_max_bytes"]), int(d["quota_max_objects"]),
                         int(d.get("current_num_bytes", 0)),
                         int(d.get("current_num_objects", 0)))
    except (ValueError, KeyError, TypeError):
        raise RadosFSError(errno.EIO, f"osd pool get-quota {pool}: unexpected answer "
                                      f"{out[:200]!r}") from None


async def _from_osdmap(conn: Connection, pool: str) -> PoolQuota:
    out = await conn.mon_command({"prefix": "osd dump", "format": "json"})
    for p in json.loads(out).get("pools", []):
        if p.get("pool_name") == pool:
            return PoolQuota(int(p.get("quota_max_bytes", 0)),
                             int(p.get("quota_max_objects", 0)), 0, 0)
    raise RadosFSError(errno.ENOENT, f"no pool {pool}")


def parse_quota(name: str, raw: bytes) -> int:
    """A quota value as setfattr gives it: a decimal number of bytes or objects (as for
    CephFS's ceph.quota.*), 0 = none; anything else is EINVAL."""
    text = raw.decode("ascii", "replace").strip().rstrip("\0")
    if not text.isdigit() or int(text) > QUOTA_MAX:
        raise RadosFSError(errno.EINVAL, f"{name} must be a whole number (0 removes the "
                                         f"quota), not {text[:40]!r}")
    return int(text)


async def set_pool_quota(conn: Connection, pool: str, field: str, value: int) -> None:
    """`ceph osd pool set-quota POOL max_bytes|max_objects VALUE`."""
    await conn.mon_command({"prefix": "osd pool set-quota", "pool": pool, "field": field,
                            "val": str(value)})
