"""The local cluster's files: ceph.conf, the build marker, wiping a build."""
from __future__ import annotations

import json
import shutil

from .common import (
    ClusterError, _CONF_HEADER, _MON_ID, _MGR_DISABLED)


class ConfFiles:
    """Mixin of LocalCluster: writes and removes the cluster's files."""

    def _write_conf(self, fsid: str, p2: int, p1: int, low: int, high: int) -> None:
        d = self.directory
        if self.store == "memstore":
            store = f"""osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}"""
        else:
            store = f"""osd objectstore = bluestore
bluestore block create = true
bluestore block size = {self.bluestore_bytes}
# a sparse file at <osd data>/block (setting "bluestore block path" to it breaks mkfs)
bluestore block db create = false
bluestore block wal create = false
bluestore cache autotune = false
bluestore cache size = 256M
osd memory target = 1G
# every bdev close waits for the aio thread's poll: 250 ms by default, ~2 s of each start
bdev aio poll ms = 25"""

        def daemon_paths(kind: str) -> str:
            return f"""{kind} data = {d}/{kind}/$cluster-$id
pid file = {d}/run/$cluster-$name.pid
admin socket = {d}/run/$cluster-$name.asok
log file = {d}/log/$cluster-$name.log"""

        conf = f"""{_CONF_HEADER}
[global]
fsid = {fsid}
mon initial members = {_MON_ID}
mon host = [v2:127.0.0.1:{p2},v1:127.0.0.1:{p1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
# the mon binds the ports in the monmap; mgr and OSD pick theirs in this per-cluster block
ms bind port min = {low}
ms bind port max = {high}
ms bind retry count = 2
ms bind retry delay = 1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd pool default size = {min(self.osds, 3)}
osd pool default min size = {max(1, min(self.osds, 3) - 1)}
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
# CRUSH failure domain: the OSD (they all live on this one host)
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# tests create many pools on the one OSD
mon max pg per osd = 1000
mgr initial modules =
run dir = {d}/run
crash dir = {d}/crash
{self.extra_conf}

[client]
keyring = {self.keyring_path}

[mon]
{daemon_paths("mon")}
mon cluster log file = {d}/log/$cluster.log
mon data avail warn = 5
mon data avail crit = 1
# commit map changes after 0.1 s, not 1 s: pool create/delete and OSD boot become fast
paxos propose interval = 0.1

[mgr]
{daemon_paths("mgr")}
mgr disabled modules = {_MGR_DISABLED}
mgr standby modules = false

[osd]
{daemon_paths("osd")}
osd crush initial weight = 1
{store}
"""
        self.conf_path.write_text(conf)

    def _wipe(self) -> None:
        """Remove a previous or half-done build, keeping the logs (they explain failures)."""
        if self.conf_path.exists() and not self.conf_path.read_text().startswith(_CONF_HEADER):
            raise ClusterError(f"{self.conf_path} was not written by radosfs.cluster; "
                               f"refusing to overwrite it")
        for sub in ("mon", "mgr", "osd", "run", "build", "crash"):
            shutil.rmtree(self.directory / sub, ignore_errors=True)
        for f in (self.conf_path, self.keyring_path, self._marker):
            f.unlink(missing_ok=True)

    def _read_marker(self) -> dict | None:
        try:
            return json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return None
