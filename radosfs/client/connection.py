"""The cluster connection: one Rados handle, an ioctx per pool, bounded timeouts.

librados waits forever by default (`rados_osd_op_timeout` and `rados_mon_op_timeout` are 0,
and `Rados.connect(timeout=)` is ignored); `client_mount_timeout` is what bounds connect.
All three are set here from mount options, so no call made through the mount hangs forever.
"""
from __future__ import annotations

import copy
import errno
import json
import logging
from dataclasses import dataclass, field

import rados

from .bridge import Bridge
from .listing import Lister
from .omap_header import OmapHeaders
from ..errors import RadosFSError

log = logging.getLogger(__name__)

# How long a check that our osdmap is the latest may wait for the monitors when our copy
# would do (listings, "is this an rbd pool"); a lookup of an unknown pool waits op_timeout.
FRESHNESS_WAIT = 3.0


@dataclass
class ClientConfig:
    """What is needed to reach the cluster (from mount options)."""
    conf: str | None = None
    name: str = "client.admin"
    keyring: str | None = None
    connect_timeout: float = 10.0
    op_timeout: float = 30.0
    cluster: str = "ceph"
    mon_host: str | None = None
    key: str | None = None       # a secret (from secretfile=): never logged or shown
    ceph_options: dict[str, str] = field(default_factory=dict)
    admin_socket: str | None = None

    def __repr__(self) -> str:   # no secret in a traceback or a log line
        return (f"ClientConfig(conf={self.conf!r}, name={self.name!r}, "
                f"mon_host={self.mon_host!r}, cluster={self.cluster!r})")


class ConnectError(Exception):
    """The cluster could not be reached; the message is one line naming the cause."""


def _clean_message(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


# The entity name each handle was opened as (`conf_get("name")` answers None, and the
# Cython handle takes no attributes): the listing handle must authenticate the same way.
_entity_names: dict[int, str] = {}


def entity_name_of(handle: rados.Rados) -> str:
    return _entity_names.get(id(handle), "client.admin")


def open_cluster(cfg: ClientConfig) -> rados.Rados:
    """Connect synchronously (before the loop starts); raise ConnectError with a clear cause."""
    name = cfg.name if "." in cfg.name else f"client.{cfg.name}"
    try:
        # conffile=None reads no file at all (mon_host= and a key are then enough).
        handle = rados.Rados(conffile=cfg.conf, name=name, clustername=cfg.cluster)
    except rados.Error as exc:
        raise ConnectError(f"cannot read ceph configuration {cfg.conf}: {_clean_message(exc)}")
    try:
        for opt, value in cfg.ceph_options.items():
            try:
                handle.conf_set(opt, value)
            except rados.Error as exc:
                raise ConnectError(f"ceph option {opt}={value}: {_clean_message(exc)}") from None
        if cfg.mon_host:
            handle.conf_set("mon_host", cfg.mon_host)
        if cfg.keyring:
            handle.conf_set("keyring", cfg.keyring)
        if cfg.key:
            handle.conf_set("key", cfg.key)
        if cfg.admin_socket:
            handle.conf_set("admin_socket", cfg.admin_socket)
        handle.conf_set("client_mount_timeout", str(int(max(1, cfg.connect_timeout))))
        handle.conf_set("rados_mon_op_timeout", str(int(max(1, cfg.op_timeout))))
        handle.conf_set("rados_osd_op_timeout", str(int(max(1, cfg.op_timeout))))
        # librbd's own cache would be a second cache below ours.
        handle.conf_set("rbd_cache", "false")
        handle.connect()
    except ConnectError:
        handle.shutdown()
        raise
    except rados.Error as exc:
        handle.shutdown()
        raise ConnectError(_connect_failure(exc, cfg, name)) from None
    _entity_names[id(handle)] = name
    return handle


def _mons(cfg: ClientConfig) -> str:
    return cfg.mon_host if cfg.mon_host else f"in {cfg.conf or 'the default ceph.conf'}"


def _connect_failure(exc: rados.Error, cfg: ClientConfig, name: str) -> str:
    """One line naming why connect failed."""
    if isinstance(exc, rados.TimedOut):
        return (f"cluster did not answer within {cfg.connect_timeout:g}s "
                f"(monitors {_mons(cfg)} unreachable?)")
    if isinstance(exc, rados.PermissionDeniedError):
        return f"the cluster refused the key of {name}: {_clean_message(exc)}"
    if isinstance(exc, rados.ObjectNotFound):
        return f"no keyring or configuration found for {name}: {_clean_message(exc)}"
    return f"cannot connect to the cluster as {name}: {_clean_message(exc)}"


class Connection:
    """The connected cluster as the filesystem uses it: ioctxs, pools, stats.

    Every ioctx and listing it hands out is in its RADOS `namespace` ("" = the default
    one, `rados -N`); `in_namespace` gives a view of the same connection in another one
    (same handle, ioctxs, listing handle). Pool-level calls (applications, pool snapshots,
    create and delete) are the pool's whatever the namespace."""

    def __init__(self, handle: rados.Rados, bridge: Bridge, namespace: str = "") -> None:
        self.handle = handle
        self.bridge = bridge
        self.namespace = namespace
        self._ioctx: dict[tuple[str, str, int | None], rados.Ioctx] = {}
        self.lister = Lister(handle, entity_name_of(handle))
        #: omap headers (C++ shim on the listing handle; see client/omap_header.py)
        self.omap_headers = OmapHeaders(self.lister)
        self._osdmap_stale_logged = False

    def in_namespace(self, namespace: str) -> Connection:
        """This connection with its ioctxs and listings in `namespace` (shares all state)."""
        if namespace == self.namespace:
            return self
        view = copy.copy(self)
        view.namespace = namespace
        return view

    async def list_names(self, pool: str, all_namespaces: bool = False,
                         limit: int | None = None) -> list[bytes]:
        """The checked listing of a pool (see client/listing.py): every object name of
        our namespace (or of every namespace) as raw bytes, or RadosFSError if the
        listing did not complete. Listings are of HEAD whatever an ioctx's read snapshot
        (librados ignores it for listings)."""
        return await self.lister.list_names(self.bridge, pool, all_namespaces, limit,
                                            self.namespace)

    async def list_namespaces(self, pool: str) -> set[bytes]:
        """The RADOS namespaces of `pool` that hold at least one object (b"" = the
        default one), from one checked listing of every namespace."""
        return await self.lister.list_namespaces(self.bridge, pool)

    async def open_ioctx(self, pool: str) -> rados.Ioctx:
        """A new ioctx of the pool in our namespace, owned by the caller."""
        io = await self.bridge.run(self.handle.open_ioctx, pool)
        if self.namespace:
            io.set_namespace(self.namespace)
        return io

    async def ioctx(self, pool: str) -> rados.Ioctx:
        """The shared ioctx of a pool (HEAD, our namespace)."""
        key = (pool, self.namespace, None)
        io = self._ioctx.get(key)
        if io is None:
            io = await self.open_ioctx(pool)
            # Fail at once with EDQUOT/ENOSPC at a quota or a full cluster instead of
            # blocking every write (and delete) until the op timeout.
            io.set_osdmap_full_try()
            io = self._ioctx.setdefault(key, io)
        return io

    async def snap_ioctx(self, pool: str, snap: str, snap_id: int) -> rados.Ioctx:
        """An ioctx that reads at a pool snapshot (read position is per-ioctx state)."""
        key = (pool, self.namespace, snap_id)
        io = self._ioctx.get(key)
        if io is None:
            io = await self.open_ioctx(pool)
            io.set_read(snap_id)
            io = self._ioctx.setdefault(key, io)
        return io

    def forget_pool(self, pool: str) -> None:
        """The pool is gone: close its ioctxs, in every namespace and snapshot."""
        for key in [k for k in self._ioctx if k[0] == pool]:
            self._ioctx.pop(key).close()

    async def list_pools(self) -> list[str]:
        return await self.bridge.run(self.handle.list_pools)

    async def pool_exists(self, pool: str) -> bool:
        """Whether our copy of the osdmap has the pool. Not `Rados.pool_exists`: for a name
        it does not know, librados waits for the latest osdmap inside it, with no bound
        while the monitors are gone (see latest_osdmap for asking the monitors)."""
        return pool in await self.list_pools()

    async def pool_applications(self, pool: str) -> list[str]:
        io = await self.ioctx(pool)
        # None (not a list) once the pool is gone from our osdmap.
        return await self.bridge.run(io.application_list) or []

    async def latest_osdmap(self, required: bool = False) -> bool:
        """Pools and pool snapshots live in the osdmap, and our copy can be seconds behind
        the monitors (changes made by other clients): fetch the latest.

        `Rados.wait_for_latest_osdmap` has no deadline of its own (it waits for the
        monitors however long they are gone), so one call is shared by everyone asking
        meanwhile and bounded by op_timeout (Bridge.run_shared). Without the monitors
        nobody can change the osdmap, so our copy is the best there is: returns False
        (and logs) when they do not answer in time, or raises ETIMEDOUT if `required`.
        """
        limit = self.bridge.op_timeout
        if not required and limit is not None:
            limit = min(limit, FRESHNESS_WAIT)  # only a freshness check: don't wait long
        try:
            await self.bridge.run_shared("wait_for_latest_osdmap",
                                         self.handle.wait_for_latest_osdmap, timeout=limit,
                                         what="Rados.wait_for_latest_osdmap")
            self._osdmap_stale_logged = False
            return True
        except RadosFSError as exc:
            if exc.errno != errno.ETIMEDOUT or required:
                raise
            if not self._osdmap_stale_logged:
                self._osdmap_stale_logged = True
                log.warning("monitors not answering: using our copy of the osdmap (%s)", exc)
            return False

    async def create_pool(self, pool: str, application: str = "radosfs") -> None:
        await self.bridge.run(self.handle.create_pool, pool)
        io = await self.ioctx(pool)
        # A pool without an application makes the cluster warn (POOL_APP_NOT_ENABLED).
        await self.bridge.run(io.application_enable, application, True)

    async def delete_pool(self, pool: str) -> None:
        self.forget_pool(pool)
        await self.bridge.run(self.handle.delete_pool, pool)

    async def mon_command(self, cmd: dict) -> str:
        rc, out, err = await self.bridge.run(self.handle.mon_command, json.dumps(cmd), b"")
        if rc < 0:
            raise RadosFSError(-rc, err or f"mon command {cmd.get('prefix')} failed")
        return out.decode() if isinstance(out, bytes) else out

    async def mgr_command(self, cmd: dict) -> str:
        rc, out, err = await self.bridge.run(self.handle.mgr_command, json.dumps(cmd), b"",
                                             what=f"mgr command {cmd.get('prefix')}")
        if rc < 0:
            raise RadosFSError(-rc, err or f"mgr command {cmd.get('prefix')} failed")
        return out.decode() if isinstance(out, bytes) else out

    async def cluster_stats(self) -> dict:
        return await self.bridge.run(self.handle.get_cluster_stats)

    def close(self) -> None:
        for io in self._ioctx.values():
            try:
                io.close()
            except rados.Error:
                pass
        self._ioctx.clear()
        self.lister.close()
        _entity_names.pop(id(self.handle), None)
        self.handle.shutdown()
