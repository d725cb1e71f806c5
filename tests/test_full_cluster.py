"""A full cluster (issue 8, section 2): writes, fsync and close give ENOSPC at once -- not
EIO, not a hang -- nothing refused is written later, `rm` works while it is full, and the
same mount writes again once space is freed.

The module starts a cluster of its own (one memstore OSD of 1 GiB) and lowers the full
ratios (`ceph osd set-full-ratio 0.2` etc.), so that it is full after some 150 MiB. Ceph
then flags the OSD and every pool full; librados would block writes until the flag goes,
but radosfs sets FULL_TRY on its ioctxs, so the OSD answers ENOSPC at once.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import Mount, fsync_retrying, healthy, own_cluster, run
from radosfs.dev.cluster import LocalCluster
from test_faults_more import WRITER, rados_size

MiB = 1 << 20


@pytest.fixture(scope="module")
def small_cluster():
    yield from own_cluster("rf-full-", "c", store="memstore", memstore_bytes=1 << 30)


def _health_checks(cluster: LocalCluster) -> set[str]:
    return set(json.loads(cluster.ceph("health", "--format", "json")).get("checks", {}))


def _dd(path, mib: int) -> subprocess.CompletedProcess:
    """`dd` of `mib` MiB into `path` through the mount; a hang fails the test."""
    return run(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={mib}"],
               check=False, timeout=120)


def test_full_cluster_gives_enospc_and_recovers(small_cluster, tmp_path):
    c = small_cluster
    pool = "fullp"
    c.ceph("osd", "pool", "create", pool, "8")
    c.ceph("osd", "pool", "application", "enable", pool, "test")
    for what, ratio in (("nearfull", "0.1"), ("backfillfull", "0.15"), ("full", "0.2")):
        c.ceph("osd", f"set-{what}-ratio", ratio)
    m = Mount(c, tmp_path / "m", "op_timeout=10,cache_size=64M")
    check = healthy(m)
    next(check)
    try:
        d = m / pool
        files, per = 10, 4
        for i in range(files):       # files that exist before the cluster is full
            (d / f"a{i}").write_bytes(b"a")
        # Fill until the OSD says it is full (it reports its usage every few seconds).
        deadline = time.monotonic() + 120
        fills = 0
        while True:
            res = _dd(d / f"fill{fills}", 8)
            if res.returncode != 0:
                break
            fills += 1
            assert time.monotonic() < deadline, f"not full after {fills} x 8 MiB"
            time.sleep(0.3)
        err = res.stderr.decode(errors="replace")
        assert "No space left on device" in err, err
        assert "OSD_FULL" in _health_checks(c)
        filled = sum(rados_size(c, pool, f"fill{i}") or 0 for i in range(fills))

        # Full: creating a file gives ENOSPC, and so does a write-back at fsync and at
        # close, at once.
        with pytest.raises(OSError) as info:
            os.open(d / "new", os.O_WRONLY | os.O_CREAT)
        assert info.value.errno == errno.ENOSPC, info.value
        fd = os.open(d / "fill0", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, os.urandom(MiB))
            t0 = time.monotonic()
            with pytest.raises(OSError) as info:
                os.fsync(fd)
            assert info.value.errno == errno.ENOSPC, info.value
            assert time.monotonic() - t0 < 10, "fsync waited for the full flag to go"
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        # New files (refused at open) and appends to old ones (refused at write or
        # close): ENOSPC each time.
        results = {}
        for mode, prefix in (("new", "q"), ("append", "a")):
            res = subprocess.run([sys.executable, "-c", WRITER, str(d), str(files), str(per),
                                  mode],
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr
            results[prefix] = json.loads(res.stdout)
            refused = [r for r in results[prefix] if r[2] is not None]
            assert len(refused) == files, results[prefix]
            assert all(r[2] == errno.ENOSPC for r in refused), refused
        where = {p: sorted({r[3] for r in rs}) for p, rs in results.items()}
        assert where["a"] != ["open"], where

        # rm works while the cluster is full, and makes room.
        for i in range(fills):
            os.unlink(d / f"fill{i}")
        assert rados_size(c, pool, "fill0") is None
        deadline = time.monotonic() + 90
        while "OSD_FULL" in _health_checks(c):
            assert time.monotonic() < deadline, "the OSD stayed full after the rm"
            time.sleep(1)

        # Nothing refused lands now that there is room: what write() refused never does
        # (what it accepted may, at the next fsync).
        deadline = time.monotonic() + 60
        for prefix, old in (("q", 0), ("a", 1)):
            for idx, accepted, err, _ in results[prefix]:
                if os.path.exists(d / f"{prefix}{idx}"):
                    fsync_retrying(d / f"{prefix}{idx}", deadline)
            for idx, accepted, err, _ in results[prefix]:
                size = rados_size(c, pool, f"{prefix}{idx}")
                assert size is None or size <= old + accepted, (prefix, idx, size, accepted)
        # The same mount writes again.
        res = run(["dd", "if=/dev/urandom", f"of={d / 'after'}", "bs=1M", "count=8",
                   "conv=fsync"], check=False, timeout=120)
        assert res.returncode == 0, res.stderr
        assert rados_size(c, pool, "after") == 8 * MiB
        enospc = [ln for ln in m.read_log().splitlines() if "ENOSPC" in ln or "errno 28" in ln]
        assert enospc, "the log does not say why writes failed"
        print(f"\nfull cluster: full after {fills} x 8 MiB ({filled >> 20} MiB in RADOS); "
              f"create, fsync, {files} new files and {files} appends got ENOSPC "
              f"(where: {where}); rm freed it; "
              f"{len(enospc)} log lines naming ENOSPC")
        next(check, None)
    finally:
        m.close()
        c.ceph("osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
