"""A pool's quota through the mount (xattrs of the pool directory, `df` of a one-pool
mount), the Prometheus metrics (scraped over HTTP and read from the textfile, parsed by a
strict parser of the text format) and the per-mount librados admin socket (`ceph daemon
PATH perf dump`). Real programs throughout: setfattr/getfattr, df, stat, the ceph CLI."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Mount, healthy, run

MiB = 1 << 20


def get_quota(cluster, pool: str) -> dict:
    return json.loads(cluster.ceph("osd", "pool", "get-quota", pool, "-f", "json"))


def getfattr(path: Path, name: str) -> subprocess.CompletedProcess:
    return run(["getfattr", "--only-values", "-n", name, str(path)], check=False)


def wait_for(pred, timeout: float, what: str):
    """Poll until pred() is truthy (usage figures come from PG stats: seconds behind)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s: {what}"
        time.sleep(0.5)


@pytest.fixture
def m(mnt):
    yield from healthy(mnt)


# ---- quota xattrs --------------------------------------------------------------------

def test_pool_quota_as_xattrs(cluster, m, pool, image_pool):
    for p in (pool, image_pool):
        d = m / p
        # no quota: ENODATA, as CephFS answers for a directory without one
        res = getfattr(d, "ceph.quota.max_bytes")
        assert res.returncode != 0 and b"No such attribute" in res.stderr
        # set through the mount: the cluster has it
        run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "10485760", str(d)])
        run(["setfattr", "-n", "ceph.quota.max_objects", "-v", "77", str(d)])
        q = get_quota(cluster, p)
        assert (q["quota_max_bytes"], q["quota_max_objects"]) == (10485760, 77)
        assert getfattr(d, "ceph.quota.max_bytes").stdout == b"10485760"
        # set by the cluster's CLI: the mount shows it
        cluster.ceph("osd", "pool", "set-quota", p, "max_objects", "1234")
        assert getfattr(d, "ceph.quota.max_objects").stdout == b"1234"
        # refusals: not a number, the usage, below the pool directory
        for name, value, msg in (("ceph.quota.max_bytes", "10G", "Invalid argument"),
                                 ("ceph.quota.max_bytes", "-1", "Invalid argument"),
                                 ("ceph.pool.used_bytes", "5", "Operation not permitted")):
            res = run(["setfattr", "-n", name, "-v", value, str(d)], check=False)
            assert res.returncode != 0 and msg.encode() in res.stderr, (name, value, res)
        assert get_quota(cluster, p)["quota_max_bytes"] == 10485760
        # not listed (cp -a / rsync -X of the pool directory must not copy them)
        assert b"ceph." not in run(["getfattr", "-d", "-m", "-", str(d)]).stdout
        # removed: setfattr -x, and a value of 0
        run(["setfattr", "-x", "ceph.quota.max_bytes", str(d)])
        run(["setfattr", "-n", "ceph.quota.max_objects", "-v", "0", str(d)])
        q = get_quota(cluster, p)
        assert (q["quota_max_bytes"], q["quota_max_objects"]) == (0, 0)
    # below the pool directory, and in .snap: no such xattrs
    (m / pool / "sub").mkdir()
    res = run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "1", str(m / pool / "sub")],
              check=False)
    assert res.returncode != 0 and b"Operation not supported" in res.stderr
    assert get_quota(cluster, pool)["quota_max_bytes"] == 0


def test_pool_usage_xattrs(cluster, m, pool, tmp_path):
    data = os.urandom(3 * MiB)
    (m / pool / "f").write_bytes(data)
    (m / pool / "g").write_bytes(b"g")
    used = wait_for(lambda: int(getfattr(m / pool, "ceph.pool.used_bytes").stdout or 0)
                    >= len(data) and getfattr(m / pool, "ceph.pool.used_bytes").stdout,
                    60, "ceph.pool.used_bytes to count the file")
    q = get_quota(cluster, pool)
    assert len(data) <= int(used) <= q["current_num_bytes"] + MiB
    objs = wait_for(lambda: int(getfattr(m / pool, "ceph.pool.objects").stdout or 0) >= 2
                    and getfattr(m / pool, "ceph.pool.objects").stdout, 60, "objects")
    assert int(objs) >= 2


def test_quota_xattrs_refused_on_a_read_only_mount(cluster, mount_factory, pool):
    ro = mount_factory("ro")
    res = run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "1000000",
               str(ro / pool)], check=False)
    assert res.returncode != 0 and b"Read-only file system" in res.stderr
    assert get_quota(cluster, pool)["quota_max_bytes"] == 0


def test_df_of_a_pool_mount_is_its_quota(cluster, tmp_path, pool, m):
    """df of a mount of one pool (pools=P) shows P's quota; on a mount of every pool,
    df MNT/POOL answers as df MNT (pyfuse3 gives the daemon no inode for statfs)."""
    quota = 64 * MiB
    cluster.ceph("osd", "pool", "set-quota", pool, "max_bytes", str(quota))
    cluster.ceph("osd", "pool", "set-quota", pool, "max_objects", "500")
    (tmp_path / "m").mkdir()
    one = Mount(cluster, tmp_path / "m" / "p", f"pools={pool}")
    try:
        (one / pool / "f").write_bytes(os.urandom(4 * MiB))
        st = os.statvfs(one / pool)
        assert st.f_blocks * st.f_frsize == quota
        assert st.f_files == 500
        wait_for(lambda: os.statvfs(one / pool).f_bavail * 4096 <= quota - 4 * MiB, 60,
                 "df to count the 4 MiB written")
        out = run(["df", "-B1", "--output=size", str(one / pool)]).stdout.split()
        assert out[-1] == str(quota).encode()
        # the quota lifted: the cluster's size again
        run(["setfattr", "-x", "ceph.quota.max_bytes", str(one / pool)])
        assert os.statvfs(one / pool).f_blocks * 4096 > quota
    finally:
        one.close()
    # every pool mounted: a pool directory answers as the mount's root
    a, b = os.statvfs(m.path), os.statvfs(m / pool)
    assert (a.f_blocks, a.f_files) == (b.f_blocks, b.f_files)
    assert a.f_blocks * a.f_frsize != quota
