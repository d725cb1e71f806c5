"""Faults on the real cluster: a pool whose I/O blocks, a pool over quota."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import fsync_retrying, run


@pytest.fixture
def stuck_pool(cluster):
    """A pool whose placement groups can never become active (size 2 on one OSD)."""
    name = "stuck-" + uuid.uuid4().hex[:6]
    cluster.ceph("osd", "pool", "create", name, "8")
    cluster.ceph("osd", "pool", "application", "enable", name, "test")
    cluster.ceph("osd", "pool", "set", name, "size", "2", "--yes-i-really-mean-it")
    cluster.ceph("osd", "pool", "set", name, "min_size", "2")
    yield name
    cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def test_blocked_pool_does_not_stall_others_and_times_out(mount_factory, stuck_pool, pool,
                                                          rados):
    """A request stuck on one pool neither stalls `ls` of another pool nor hangs forever:
    it fails with EIO after op_timeout, and the log names the cause."""
    m = mount_factory("op_timeout=6")
    rados(pool, "put", "visible", "/etc/hostname")
    started = time.monotonic()
    stuck = subprocess.Popen([sys.executable, "-c",
                              f"import os\ntry:\n os.stat({str(m / stuck_pool / 'x')!r})\n"
                              f"except OSError as e:\n print(e.errno)"],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert stuck.poll() is None, "the stat on the stuck pool should still be waiting"
    t0 = time.monotonic()
    listing = run(["ls", str(m / pool)], timeout=30).stdout.decode().split()
    assert time.monotonic() - t0 < 3.0, "ls of another pool was stalled"
    assert listing == ["visible"]
    out, _ = stuck.communicate(timeout=60)
    took = time.monotonic() - started
    assert out.strip() == str(errno.EIO)
    assert took < 30, f"the stuck call took {took:.0f}s"
    assert "did not answer in time" in m.read_log()


def test_quota_gives_edquot_and_keeps_the_data(mnt, pool, cluster, tmp_path):
    """Over a pool quota, close() reports EDQUOT (not a hang), and the log says why."""
    cluster.ceph("osd", "pool", "set-quota", pool, "max_bytes", str(1 << 20))
    path = mnt / pool / "big"
    deadline = time.monotonic() + 90
    err = None
    i = 0
    # The OSDs learn of the quota with the next statistics report: keep writing.
    while time.monotonic() < deadline and err is None:
        try:
            with open(f"{path}{i}", "wb") as f:
                f.write(os.urandom(1 << 20))
        except OSError as exc:
            err = exc.errno
        i += 1
        time.sleep(0.5)
    assert err in (errno.EDQUOT, errno.ENOSPC), f"no quota error after {i} files"
    cluster.ceph("osd", "pool", "set-quota", pool, "max_bytes", "0")
    # Not lost: bytes refused at close stayed in the cache, and once the quota is lifted
    # the next fsync writes them (the OSDs learn of it with their next report: retry).
    written = sorted(mnt / pool / n for n in os.listdir(mnt / pool))
    assert written, "no file was created at all"
    deadline = time.monotonic() + 90
    for name in written:
        fsync_retrying(name, deadline)
    for name in written:
        size = run(["rados", "-p", pool, "stat", name.name], cluster).stdout.split()[-1]
        assert size == str(1 << 20).encode(), f"{name.name}: {size!r} bytes in RADOS"
