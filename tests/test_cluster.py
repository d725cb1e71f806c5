"""radosfs.cluster against real Ceph daemons (no mocks): side-by-side clusters, clean failure."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import shutil
import socket
import subprocess

import pytest

from radosfs.dev.cluster import ClusterError, LocalCluster, main

pytestmark = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rados")),
    reason="Ceph daemons and CLIs not installed")


def _pids(cluster: LocalCluster) -> list[int]:
    """Pids recorded in the cluster's pid files."""
    return [int(p.read_text().split()[0]) for p in (cluster.directory / "run").glob("*.pid")]


def _processes_using(conf: pathlib.Path) -> list[str]:
    """Command lines of live processes started with this conf (what must be gone after stop)."""
    found = []
    needle = os.fsencode(str(conf))
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in argv:
            found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')}")
    return found


def _mon_ports(cluster: LocalCluster) -> set[int]:
    text = cluster.conf_path.read_text()
    host = re.search(r"^mon host = (.*)$", text, re.M).group(1)
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", host)}


def _rados(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    # Plain `rados`, no --conf: the cluster's env() (CEPH_CONF) must be enough.
    return subprocess.run(["rados", *args], env=cluster.env(), capture_output=True, timeout=30,
                          check=True)


def test_two_memstore_clusters_side_by_side(tmp_path, capsys):
    clusters = [LocalCluster(tmp_path / name, memstore_bytes=256 << 20) for name in ("a", "b")]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:   # concurrent builds too
            for fut in [pool.submit(c.start, 60) for c in clusters]:
                fut.result()
        assert all(c.running() for c in clusters)
        assert _mon_ports(clusters[0]).isdisjoint(_mon_ports(clusters[1]))
        for c in clusters:
            assert c.keyring_path.exists() and c.conf_path.exists()
            assert "cephx" in c.conf_path.read_text()

        for i, c in enumerate(clusters):
            c.ceph("osd", "pool", "create", "t")
            src = tmp_path / f"in-{i}"
            src.write_bytes(f"cluster {i}\n".encode() * 1000)
            _rados(c, "-p", "t", "put", "obj", str(src))
        for i, c in enumerate(clusters):          # each reads back its own data, not the other's
            out = tmp_path / f"out-{i}"
            _rados(c, "-p", "t", "get", "obj", str(out))
            assert out.read_bytes() == f"cluster {i}\n".encode() * 1000
        fsids = {c.ceph("fsid").strip() for c in clusters}
        assert len(fsids) == 2

        assert main(["status", str(clusters[0].directory)]) == 0
        assert str(clusters[0].conf_path) in capsys.readouterr().out

        pids = [_pids(c) for c in clusters]
        assert all(len(p) == 3 for p in pids)
    finally:
        for c in clusters:
            c.stop()
    for c, cluster_pids in zip(clusters, pids):
        assert not c.running()
        for pid in cluster_pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert _processes_using(c.conf_path) == []
        assert not list((c.directory / "run").glob("*.pid"))
        c.stop()                                   # idempotent
    assert main(["status", str(clusters[0].directory)]) == 3


def test_mon_port_taken_raises_and_leaves_nothing_running(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cluster = LocalCluster(tmp_path / "c", mon_port=port)
        with pytest.raises(ClusterError) as info:
            cluster.start(timeout=30)
    message = str(info.value)
    mon_log = cluster.directory / "log" / "ceph-mon.a.log"
    assert "\n" not in message
    assert "mon.a" in message and str(mon_log) in message
    assert "bind" in message
    assert mon_log.exists()
    assert not cluster.running()
    assert _processes_using(cluster.conf_path) == []


def test_osd_mkfs_failure_stops_mon_and_mgr(tmp_path):
    # A 1 MiB bluestore device is too small for bluefs: the OSD's mkfs fails after the mon and
    # mgr are already running, and both must be stopped again.
    cluster = LocalCluster(tmp_path / "c", store="bluestore", bluestore_bytes=1 << 20)
    with pytest.raises(ClusterError) as info:
        cluster.start(timeout=30)
    message = str(info.value)
    assert "ceph-osd" in message and str(cluster.directory / "log" / "ceph-osd.0.log") in message
    assert not cluster.running()
    assert _processes_using(cluster.conf_path) == []
    # The half-built cluster is gone (logs kept), so a later start begins afresh.
    assert not cluster.conf_path.exists()
    assert (cluster.directory / "log" / "ceph-osd.0.log").exists()


def test_osd_names_and_a_built_cluster_of_another_shape(tmp_path):
    """Daemons are named as Ceph names them ("osd" is osd.0); a directory built with
    another number of OSDs is refused in one line before anything is started."""
    c = LocalCluster(tmp_path / "c", store="bluestore", osds=3)
    assert [d.name for d in c._daemons] == ["mon.a", "mgr.x", "osd.0", "osd.1", "osd.2"]
    assert c._daemon("osd") is c._daemon("osd.0") and c._daemon("osd.2").ident == "2"
    with pytest.raises(ValueError, match="osd.3"):
        c._daemon("osd.3")
    with pytest.raises(ValueError):
        LocalCluster(tmp_path / "d", osds=0)
    c.directory.mkdir()
    c._marker.write_text('{"store": "bluestore", "osds": 1}\n')
    with pytest.raises(ClusterError, match="cluster of 1 OSDs, not 3"):
        c.start(timeout=10)
    assert not any(c._alive(d) for d in c._daemons)
