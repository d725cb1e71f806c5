"""LocalCluster: build, start, check and stop a throwaway cluster."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import time
import uuid

from .common import (
    ClusterError, _Daemon, _MARKER, _CLUSTER, _MON_ID, _MGR_ID, _OSD_ID, _BLOCK_SIZE,
    _one_line, _signal, _free_ports, _free_block)
from .conf import ConfFiles
from .daemons import Daemons

log = logging.getLogger(__name__)

EC_PROFILE = "radosfs-k2m1"   # the erasure-code profile of a cluster of several OSDs


class LocalCluster(ConfFiles, Daemons):
    """A single-node cluster living in ``directory``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike, store: str = "memstore",
                 memstore_bytes: int = 4 << 30, bluestore_bytes: int = 20 << 30,
                 *, mon_port: int | None = None, extra_conf: str = "", osds: int = 1) -> None:
        """Describe the cluster; nothing is built or started until ``start()``.

        ``mon_port`` forces the mon's msgr2 port on a fresh build (a test hook: it lets a test
        make the mon's bind fail); by default free ports are picked by binding port 0.
        ``extra_conf`` is added to the ``[global]`` section of a fresh build's ceph.conf (e.g.
        ``osd fast shutdown = false``, so a memstore OSD survives a stop).
        ``osds`` > 1 is the production-shaped profile: that many OSDs (``memstore_bytes`` or
        ``bluestore_bytes`` each), pools replicated ``min(osds, 3)`` times with min_size
        one less, CRUSH failure domain osd, and the erasure-code profile ``EC_PROFILE``
        (k=2, m=1, failure domain osd) for ``ceph osd pool create NAME N N erasure
        radosfs-k2m1``.
        """
        if store not in ("memstore", "bluestore"):
            raise ValueError(f"store must be 'memstore' or 'bluestore', not {store!r}")
        if osds < 1:
            raise ValueError(f"osds must be at least 1, not {osds}")
        self.directory = pathlib.Path(os.path.abspath(directory))
        self.store = store
        self.memstore_bytes = int(memstore_bytes)
        self.bluestore_bytes = int(bluestore_bytes)
        self.mon_port = mon_port
        self.extra_conf = extra_conf
        self.conf_path: pathlib.Path = self.directory / "ceph.conf"
        self.keyring_path: pathlib.Path = self.directory / f"{_CLUSTER}.client.admin.keyring"
        self._marker = self.directory / _MARKER
        self._mon = _Daemon(self.directory, "mon", _MON_ID)
        self._mgr = _Daemon(self.directory, "mgr", _MGR_ID)
        self.osds = int(osds)
        self._osd_daemons = tuple(_Daemon(self.directory, "osd", str(i))
                                  for i in range(self.osds))
        self._daemons = (self._mon, self._mgr, *self._osd_daemons)
        self._procs: dict[str, subprocess.Popen] = {}   # daemons this object launched, by name
        self._watch: list[_Daemon] = []                 # launched by the current start()

    # ------------------------------------------------------------------ public API

    def start(self, timeout: float = 90) -> None:
        """Build the cluster if needed, start its daemons, and return once a client can write.

        Readiness is proven by creating a pool, writing and removing an object and deleting the
        pool, because "OSD up" in the osdmap can be stale after a restart. On any failure the
        daemons this call started are stopped again and ClusterError is raised.
        """
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        longest = self.directory / "run" / f"{_CLUSTER}-{self._mgr.name}.asok"
        if len(os.fsencode(longest)) > 107:    # sun_path: the daemons' admin sockets
            raise ClusterError(f"directory path too long for the daemons' admin sockets "
                               f"({longest} is over 107 bytes); use a shorter one")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._watch = []
        building = False
        try:
            built = self._read_marker()
            if built is not None and built.get("store") != self.store:
                raise ClusterError(f"{self.directory} holds a {built.get('store')} cluster, not "
                                   f"a {self.store} one; start it with store "
                                   f"{built.get('store')!r} or remove the directory")
            if built is not None and built.get("osds", 1) != self.osds:
                raise ClusterError(f"{self.directory} holds a cluster of {built.get('osds', 1)} "
                                   f"OSDs, not {self.osds}; remove the directory")
            if built is not None and self.store == "memstore" and not all(
                    self._alive(d) for d in self._osd_daemons):
                # memstore lost the OSD's data when it stopped: only a fresh build is usable.
                log.info("memstore cluster in %s was stopped; rebuilding it", self.directory)
                self.stop()
                built = None
            if built is None:
                if any(self._alive(d) for d in self._daemons):
                    raise ClusterError(f"daemons of an unfinished build are running in "
                                       f"{self.directory}; run stop first")
                self._wipe()
                building = True
                self._build(deadline)
            else:
                for d in self._daemons:
                    if not self._alive(d):
                        self._launch(d)
            self._wait_ready(deadline)
        except BaseException as exc:
            try:
                self._stop_daemons(list(self._watch))
            except ClusterError as stop_exc:
                log.error("%s", stop_exc)
            self._watch = []
            if building:
                self._wipe()          # keep the logs, drop the half-built cluster
            if isinstance(exc, ClusterError):
                raise
            if isinstance(exc, Exception):
                raise ClusterError(f"starting the cluster in {self.directory} failed: "
                                   f"{_one_line(str(exc)) or type(exc).__name__}; "
                                   f"see {self._mon.log_file}") from exc
            raise
        self._watch = []
        log.info("cluster in %s ready in %.1fs (conf %s)", self.directory,
                 time.monotonic() - t0, self.conf_path)

    def stop(self) -> None:
        """Stop every daemon of this cluster (by pid: SIGTERM, wait, SIGKILL); idempotent."""
        # The OSDs first, so that they can tell the mon they are going down.
        errors = []
        for group in (list(self._osd_daemons), [self._mgr, self._mon]):
            try:
                self._stop_daemons(group)
            except ClusterError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def ceph(self, *args: str, timeout: float = 30) -> str:
        """Run the ``ceph`` CLI against this cluster and return its stdout.

        Raises ClusterError (with the CLI's error line) on a non-zero exit or a timeout.
        """
        return self._ceph(list(args), timeout=timeout, watch=False)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: CEPH_CONF makes plain ``ceph``/``rados``/``rbd`` work."""
        env = dict(os.environ)
        env["CEPH_CONF"] = str(self.conf_path)
        return env

    def running(self) -> bool:
        """True when every daemon (mon, mgr, each OSD) of this cluster is alive."""
        return all(self._alive(d) for d in self._daemons)

    # -- single daemons, for fault tests: stop one and start it again, by pid

    def _daemon(self, kind: str) -> _Daemon:
        """``kind`` is "mon", "mgr", "osd" (osd.0) or a daemon name such as "osd.2"."""
        for d in self._daemons:
            if d.name == kind or (d.kind == kind and d.ident in (_MON_ID, _MGR_ID, _OSD_ID)):
                return d
        raise ValueError(f"no daemon {kind!r} (mon, mgr, osd, "
                         f"{', '.join(d.name for d in self._osd_daemons)})")

    def daemon_pid(self, kind: str) -> int | None:
        """The pid of this cluster's daemon ``kind`` ("mon", "mgr", "osd" = "osd.0",
        "osd.N"), None if stopped."""
        return self._pid(self._daemon(kind))

    def stop_daemon(self, kind: str, kill: bool = False, grace: float = 15) -> None:
        """Stop one daemon by pid: SIGTERM (SIGKILL after ``grace`` s), or SIGKILL at once.

        A memstore OSD keeps its data across a stop only with ``osd fast shutdown = false``
        (``LocalCluster(extra_conf=...)``) and a SIGTERM; bluestore always does.
        """
        d = self._daemon(kind)
        if kill:
            pid = self._pid(d)
            if pid is not None:
                log.info("killing %s (pid %d)", d.name, pid)
                _signal(pid, signal.SIGKILL)
        self._stop_daemons([d], grace=grace)

    def start_daemon(self, kind: str, timeout: float = 60) -> None:
        """Start one stopped daemon of the built cluster again and wait until it serves (a
        mon answers `ceph mon stat`; an OSD is active; a mgr is launched). ``kind`` as
        for ``daemon_pid``."""
        if self._read_marker() is None:
            raise ClusterError(f"no built cluster in {self.directory}; use start()")
        d = self._daemon(kind)
        deadline = time.monotonic() + timeout
        self._watch = []
        if not self._alive(d):
            self._launch(d)
        try:
            if d.kind == "mon":
                self._ceph(["mon", "stat"], timeout=self._left(deadline))
            elif d.kind == "osd":
                self._wait_osd_active(deadline, d)
        finally:
            self._watch = []

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.directory)!r}, store={self.store!r})"

    # ------------------------------------------------------------------ build

    def _build(self, deadline: float) -> None:
        """Create keys, monmap, mon, mgr and OSD from nothing, launching each daemon.

        The mkfs steps run with -f too: without it ceph-osd forks and its child outlives the
        command we wait for (a zombie until init reaps it).
        """
        t0 = time.monotonic()
        for sub in ("log", "run", "build", "crash", "mon", "mgr", "osd"):
            (self.directory / sub).mkdir(exist_ok=True)
        fsid = str(uuid.uuid4())
        p2, p1 = _free_ports(2, forced_first=self.mon_port)
        block = _BLOCK_SIZE * self.osds       # each OSD binds 8 ports (public, cluster, 2 x hb)
        low = _free_block(block)
        high = low + block - 1
        self._write_conf(fsid, p2, p1, low, high)
        build = self.directory / "build"
        mon_keyring = build / "mon.keyring"
        monmap = build / "monmap"
        self._tool(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key",
                    "-n", "mon.", "--cap", "mon", "allow *"], deadline, conf_env=False)
        self._tool(["ceph-authtool", "--create-keyring", str(self.keyring_path), "--gen-key",
                    "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                    "--cap", "mds", "allow *", "--cap", "mgr", "allow *"], deadline,
                   conf_env=False)
        self._tool(["ceph-authtool", str(mon_keyring), "--import-keyring",
                    str(self.keyring_path)], deadline, conf_env=False)
        self._tool(["monmaptool", "--create", "--clobber", "--addv", _MON_ID,
                    f"[v2:127.0.0.1:{p2},v1:127.0.0.1:{p1}]", "--fsid", fsid, str(monmap)],
                   deadline, conf_env=False)
        self._tool(["ceph-mon", "-f", "--cluster", _CLUSTER, "--conf", str(self.conf_path),
                    "--mkfs", "-i", _MON_ID, "--monmap", str(monmap),
                    "--keyring", str(mon_keyring)], deadline, daemon=self._mon)
        self._launch(self._mon)

        self._mgr.data.mkdir(parents=True, exist_ok=True)
        self._ceph(["auth", "get-or-create", self._mgr.name, "mon", "allow profile mgr",
                    "osd", "allow *", "mds", "allow *", "-o", str(self._mgr.data / "keyring")],
                   timeout=self._left(deadline))
        self._launch(self._mgr)

        osd_uuids = [self._build_osd(osd, deadline) for osd in self._osd_daemons]
        if self.osds > 1:
            self._ceph(["osd", "erasure-code-profile", "set", EC_PROFILE, "k=2", "m=1",
                        "crush-failure-domain=osd"], timeout=self._left(deadline))
        self._marker.write_text(json.dumps({"store": self.store, "fsid": fsid,
                                            "osd_uuid": osd_uuids[0], "osd_uuids": osd_uuids,
                                            "osds": self.osds, "mon_ports": [p2, p1],
                                            "bind_ports": [low, high]}) + "\n")
        shutil.rmtree(build, ignore_errors=True)
        log.info("built %s cluster %s in %s (mon v2:%d v1:%d, daemons %d-%d) in %.1fs",
                 self.store, fsid, self.directory, p2, p1, low, high,
                 time.monotonic() - t0)

    def _build_osd(self, osd: _Daemon, deadline: float) -> str:
        """Create one OSD (ids are handed out in order: 0, 1, ...), launch it; its uuid."""
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph(["osd", "new", osd_uuid], timeout=self._left(deadline)).strip()
        if osd_id != osd.ident:
            raise ClusterError(f"`ceph osd new` returned id {osd_id!r}, expected {osd.ident}; "
                               f"see {self._mon.log_file}")
        osd.data.mkdir(parents=True, exist_ok=True)
        self._ceph(["auth", "get-or-create", osd.name, "mon", "allow profile osd",
                    "mgr", "allow profile osd", "osd", "allow *",
                    "-o", str(osd.data / "keyring")], timeout=self._left(deadline))
        self._tool(["ceph-osd", "-f", "--cluster", _CLUSTER, "--conf", str(self.conf_path),
                    "--mkfs", "-i", osd.ident, "--osd-uuid", osd_uuid], deadline, daemon=osd)
        self._launch(osd)
        return osd_uuid
