"""Production-shaped clusters (issue 8, section 3): three OSDs, replicated and erasure-coded
pools, through the real mount.

The module starts a cluster of its own (`LocalCluster(osds=3)`: bluestore on small sparse
files, pools replicated 3 times with min_size 2, CRUSH failure domain osd, the EC profile
k=2 m=1), stopped by pid and removed at the end. One OSD is killed with SIGKILL in the
middle of a `cp`; erasure-coded pools with and without `allow_ec_overwrites` get the same
operations as a replicated one, every result checked with `rados`.

The copy is 160 MiB in CI; `RADOSFS_LONG_FAULTS=1` makes it 300 MiB.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import time
import uuid
from typing import Callable

import pytest

from conftest import Mount, healthy, os_fails, own_cluster, run
from radosfs.dev.cluster import EC_PROFILE, LocalCluster
from test_faults_more import rados_get, rados_size, sha

LONG = bool(os.environ.get("RADOSFS_LONG_FAULTS"))
COPY_MIB = 300 if LONG else 160
MiB = 1 << 20


@pytest.fixture(scope="module")
def shaped():
    """Three bluestore OSDs on sparse files of 3 GiB each (a few hundred MiB are used)."""
    yield from own_cluster("rf-shapes-", "c", store="bluestore", bluestore_bytes=3 << 30,
                           osds=3)


def _restore_osds(cluster: LocalCluster) -> None:
    for i in range(cluster.osds):
        if cluster.daemon_pid(f"osd.{i}") is None:
            cluster.start_daemon(f"osd.{i}", timeout=120)


@pytest.fixture
def smount(shaped, tmp_path):
    """`smount(options)`: a mount of the shaped cluster, healthy at the end (no traceback,
    still serving), unmounted afterwards."""
    mounts: list[Mount] = []
    checks = []

    def make(options: str = "op_timeout=60") -> Mount:
        m = Mount(shaped, tmp_path / f"m{len(mounts)}", options)
        mounts.append(m)
        check = healthy(m)
        next(check)
        checks.append(check)
        return m

    yield make
    _restore_osds(shaped)
    try:
        for check in checks:
            next(check, None)
    finally:
        for m in mounts:
            m.close()


def _pool(cluster: LocalCluster, kind: str) -> str:
    """A pool of `kind`: "replicated", "ec-overwrites" (EC with allow_ec_overwrites) or
    "ec" (EC without: whole-object writes and appends only)."""
    prefix = {"replicated": "srep-", "ec-overwrites": "secow-", "ec": "sec-"}[kind]
    name = prefix + uuid.uuid4().hex[:6]
    if kind == "replicated":
        cluster.ceph("osd", "pool", "create", name, "8")
    else:
        cluster.ceph("osd", "pool", "create", name, "8", "8", "erasure", EC_PROFILE)
        if kind == "ec-overwrites":
            cluster.ceph("osd", "pool", "set", name, "allow_ec_overwrites", "true")
    cluster.ceph("osd", "pool", "application", "enable", name, "test")
    return name


@pytest.fixture
def spool(shaped, request):
    """A pool of the kind the test is parametrized with, removed afterwards."""
    name = _pool(shaped, request.param)
    yield name
    _restore_osds(shaped)
    shaped.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def _pool_detail(cluster: LocalCluster, pool: str) -> dict:
    pools = json.loads(cluster.ceph("osd", "pool", "ls", "detail", "--format", "json"))
    return next(p for p in pools if p["pool_name"] == pool)


def _random_file(path: pathlib.Path, size: int) -> pathlib.Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def _sha_file(path: pathlib.Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def _written(m: Mount) -> int:
    return m.stats()["cache"]["bytes_written"]


def _wait_clean(cluster: LocalCluster, timeout: float = 240) -> float:
    """Wait until every PG is active+clean (recovery done); returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        status = json.loads(cluster.ceph("status", "--format", "json"))
        pgmap = status["pgmap"]
        states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
        if states.get("active+clean", 0) == pgmap["num_pgs"]:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"PGs not clean after {timeout}s: {states}"
        time.sleep(1)


# ---- one OSD of three killed in the middle of a copy -------------------------------------

@pytest.mark.parametrize("spool", ["replicated"], indirect=True)
def test_osd_killed_mid_cp_the_copy_completes(shaped, spool, smount, tmp_path):
    """SIGKILL of one OSD of three while `cp` writes COPY_MIB into a pool of size 3,
    min_size 2: the copy completes without error, `rados get` has every byte, and still
    does after the OSD has rejoined and recovery is done."""
    detail = _pool_detail(shaped, spool)
    assert (detail["size"], detail["min_size"]) == (3, 2), detail
    src = _random_file(tmp_path / "src", COPY_MIB * MiB)
    want = _sha_file(src)
    m = smount("op_timeout=60,cache_size=64M")   # a small cache: the copy flows to RADOS
    dst = m / spool / "big"
    t0 = time.monotonic()
    cp = subprocess.Popen(["cp", str(src), str(dst)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    # In the middle: a quarter of the file acknowledged by the cluster, cp still running.
    while _written(m) < COPY_MIB * MiB // 4 and cp.poll() is None:
        time.sleep(0.05)
    assert cp.poll() is None, "the copy ended before the OSD could be killed"
    victim = shaped.daemon_pid("osd.1")
    shaped.stop_daemon("osd.1", kill=True)
    killed_at = time.monotonic()
    assert shaped.daemon_pid("osd.1") is None and victim is not None
    out, err = cp.communicate(timeout=600)
    took, after_kill = time.monotonic() - t0, time.monotonic() - killed_at
    assert cp.returncode == 0 and not err, err.decode(errors="replace")
    deadline = time.monotonic() + 60    # the monitors know it is down (the copy ran on two)
    while " 2 up" not in (osd_stat := shaped.ceph("osd", "stat")):
        assert time.monotonic() < deadline, osd_stat
        time.sleep(0.5)
    assert rados_size(shaped, spool, "big") == COPY_MIB * MiB
    assert sha(rados_get(shaped, spool, "big", tmp_path)) == want
    t1 = time.monotonic()
    shaped.start_daemon("osd.1", timeout=120)
    recovery = _wait_clean(shaped)
    rejoined = time.monotonic() - t1
    assert sha(rados_get(shaped, spool, "big", tmp_path)) == want
    res = run(["cmp", str(src), str(dst)], timeout=300, check=False)
    assert res.returncode == 0, res.stdout
    print(f"\nOSD killed mid-cp: {COPY_MIB} MiB in {took:.1f}s ({after_kill:.1f}s after the "
          f"SIGKILL at {(killed_at - t0):.1f}s); OSD back and PGs clean after "
          f"{rejoined:.1f}s (recovery {recovery:.1f}s); checksums match before and after")


# ---- the same operations on replicated and erasure-coded pools ---------------------------

def _apply(root: pathlib.Path, ops: list[Callable[[pathlib.Path], None]]) -> None:
    for op in ops:
        op(root)


def _pwrite(name: str, offset: int, data: bytes) -> Callable[[pathlib.Path], None]:
    def op(root: pathlib.Path) -> None:
        fd = os.open(root / name, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
    return op


def _append(name: str, data: bytes) -> Callable[[pathlib.Path], None]:
    def op(root: pathlib.Path) -> None:
        with open(root / name, "ab") as f:
            f.write(data)
    return op


def _truncate(name: str, size: int) -> Callable[[pathlib.Path], None]:
    return lambda root: os.truncate(root / name, size)


def _rename(old: str, new: str) -> Callable[[pathlib.Path], None]:
    return lambda root: os.rename(root / old, root / new)


def _copy_in(src: pathlib.Path, name: str) -> Callable[[pathlib.Path], None]:
    def op(root: pathlib.Path) -> None:
        run(["cp", str(src), str(root / name)], timeout=300)
    return op


@pytest.mark.parametrize("spool", ["replicated", "ec-overwrites"], indirect=True)
def test_ec_pool_with_overwrites_behaves_like_a_replicated_one(shaped, spool, smount,
                                                               tmp_path):
    """cp, a partial overwrite, an append, truncate down and up, rename, a striped file
    past 64 MiB (overwritten, appended, cut, renamed), xattrs: the same operations on a
    local directory and through the mount; `rados` has the local bytes for every file."""
    if spool.startswith("secow-"):
        detail = _pool_detail(shaped, spool)
        assert "ec_overwrites" in detail["flags_names"], detail
        profile = json.loads(shaped.ceph("osd", "erasure-code-profile", "get",
                                         detail["erasure_code_profile"], "--format", "json"))
        assert (profile["k"], profile["m"], profile["crush-failure-domain"]) == \
            ("2", "1", "osd"), profile
    m = smount()
    local = tmp_path / "ref"
    local.mkdir()
    small = _random_file(tmp_path / "small", 3 * MiB + 123)
    big = _random_file(tmp_path / "big", 80 * MiB + 5)
    ops = [
        _copy_in(small, "f"), _pwrite("f", 100, b"XYZ" * 1000), _append("f", b"A" * 5000),
        _truncate("f", MiB + 1), _truncate("f", 2 * MiB + 3), _pwrite("f", 2 * MiB, b"tail"),
        _rename("f", "g"),
        _copy_in(big, "s"), _pwrite("s", 70 * MiB + 7, os.urandom(MiB)),
        _append("s", os.urandom(12345)), _truncate("s", 75 * MiB + 3),
        _pwrite("s", 4 * MiB - 2, b"across a piece boundary"), _rename("s", "s2"),
    ]
    _apply(local, ops)
    _apply(m / spool, ops)
    run(["setfattr", "-n", "user.colour", "-v", "blue", str(m / spool / "g")])
    listing = sorted(run(["rados", "-p", spool, "ls"], shaped).stdout.decode().split())
    assert "f" not in listing and "s" not in listing and "s.0000000000000000" not in listing
    for name in ("g", "s2"):
        want = (local / name).read_bytes()
        assert rados_size(shaped, spool, name) == len(want), name
        assert sha(rados_get(shaped, spool, name, tmp_path)) == sha(want), name
        assert sha((m / spool / name).read_bytes()) == sha(want), name
    assert run(["rados", "-p", spool, "getxattr", "g", "colour"], shaped).stdout == b"blue"


# ---- an erasure-coded pool without overwrites ---------------------------------------------

@pytest.mark.parametrize("spool", ["ec"], indirect=True)
def test_ec_pool_without_overwrites_whole_writes_work_partial_ones_are_refused(
        shaped, spool, smount, tmp_path):
    """Without allow_ec_overwrites: cp (plain and striped), mv, xattrs, rm work; a partial
    overwrite, an append at an unaligned end and truncate fail with EOPNOTSUPP and a log
    line saying why, and the object in RADOS keeps exactly its old bytes."""
    assert "ec_overwrites" not in _pool_detail(shaped, spool)["flags_names"]
    m = smount()
    d = m / spool
    small = _random_file(tmp_path / "small", 3 * MiB + 123)
    big = _random_file(tmp_path / "big", 80 * MiB + 5)
    for src, name in ((small, "a"), (small, "b"), (small, "c"), (small, "e"), (big, "s")):
        run(["cp", str(src), str(d / name)], timeout=300)
        assert sha(rados_get(shaped, spool, name, tmp_path)) == _sha_file(src), name
    old = small.read_bytes()

    # A partial overwrite: fsync says EOPNOTSUPP; RADOS keeps the old bytes.
    start = len(m.read_log())
    fd = os.open(d / "a", os.O_WRONLY)
    try:
        os.pwrite(fd, b"XYZ", 100)
        os_fails(lambda: os.fsync(fd), errno.EOPNOTSUPP)
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            assert exc.errno in (errno.EOPNOTSUPP, errno.EIO), exc
    assert rados_get(shaped, spool, "a", tmp_path) == old
    new_log = m.read_log()[start:]
    refused = [ln for ln in new_log.splitlines() if "write-back to" in ln and " ERROR " in ln]
    assert len(refused) == 1 and "allow_ec_overwrites" in refused[0], new_log
    # An append at an end that is no multiple of the stripe width, and a truncate.
    with pytest.raises(OSError) as info:
        with open(d / "b", "ab") as f:
            f.write(b"appended")
    assert info.value.errno == errno.EOPNOTSUPP, info.value
    assert rados_get(shaped, spool, "b", tmp_path) == old
    # An append where the size is a multiple of the stripe width (8 KiB) is an append
    # RADOS takes.
    width = _pool_detail(shaped, spool)["stripe_width"]
    aligned = os.urandom(2 * width)
    (d / "aligned").write_bytes(aligned)
    with open(d / "aligned", "ab") as f:
        f.write(b"appended")
    assert rados_get(shaped, spool, "aligned", tmp_path) == aligned + b"appended"
    os_fails(lambda: os.truncate(d / "c", 1000), errno.EOPNOTSUPP)
    os_fails(lambda: os.truncate(d / "s", 10 * MiB), errno.EOPNOTSUPP)
    assert rados_get(shaped, spool, "c", tmp_path) == old
    assert rados_size(shaped, spool, "s") == 80 * MiB + 5
    assert "truncate only to 0" in m.read_log()[start:]

    # mv (a copy of whole objects, then the source removed) and xattrs work, plain and
    # striped; nothing of the source is left.
    run(["setfattr", "-n", "user.k", "-v", "v1", str(d / "e")])
    run(["mv", str(d / "e"), str(d / "e2")])
    run(["mv", str(d / "s"), str(d / "s2")])
    listing = set(run(["rados", "-p", spool, "ls"], shaped).stdout.decode().split())
    assert not {"e", "s", "s.0000000000000000"} & listing, listing
    assert rados_get(shaped, spool, "e2", tmp_path) == old
    assert run(["rados", "-p", spool, "getxattr", "e2", "k"], shaped).stdout == b"v1"
    assert sha(rados_get(shaped, spool, "s2", tmp_path)) == _sha_file(big)
    # O_TRUNC (cp over a file, `>`) is a whole-object write of nothing: works, plain and
    # striped, and the new bytes follow as appends.
    run(["cp", str(big), str(d / "e2")], timeout=300)
    assert sha(rados_get(shaped, spool, "e2", tmp_path)) == _sha_file(big)
    run(["cp", str(small), str(d / "s2")], timeout=300)
    assert rados_get(shaped, spool, "s2", tmp_path) == old
    # Metadata (the record is an xattr) and pool snapshots work too.
    os.chmod(d / "e2", 0o640)
    os.utime(d / "e2", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    st = os.stat(d / "e2")
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o640, 1_000_000_000_123_456_789)
    # A snapshot writes the pool's dirty data back first: while the refused bytes of `a`
    # and `b` wait in the cache it fails with their errno; removing the files ends that.
    os_fails(lambda: os.mkdir(d / ".snap" / "before-rm"), errno.EOPNOTSUPP)
    os.unlink(d / "a")
    os.unlink(d / "b")
    assert rados_size(shaped, spool, "a") is None and rados_size(shaped, spool, "b") is None
    os.mkdir(d / ".snap" / "before-rm")
    os.unlink(d / "s2")
    assert rados_size(shaped, spool, "s2") is None
    assert (d / ".snap" / "before-rm" / "s2").read_bytes() == old
    os.rmdir(d / ".snap" / "before-rm")


@pytest.mark.parametrize("spool", ["ec-overwrites"], indirect=True)
def test_omap_on_ec_pools_is_refused_by_ceph_and_mv_needs_none(shaped, spool, smount,
                                                                tmp_path):
    """EC pools hold no omap (Ceph refuses it even with overwrites), so no file there has
    any: mv carries xattrs and data and leaves nothing behind. A rename from a replicated
    pool (whose file has omap) into an EC pool is EXDEV before anything is written, so
    mv(1) copies the data itself and the omap stays behind, as across filesystems."""
    res = run(["rados", "-p", spool, "setomapval", "x", "k", "v"], shaped, check=False)
    assert res.returncode != 0 and b"not supported" in res.stderr.lower() + res.stdout.lower(), \
        res
    m = smount()
    rep = _pool(shaped, "replicated")
    try:
        (m / rep / "o").write_bytes(b"with omap")
        run(["rados", "-p", rep, "setomapval", "o", "key", "val"], shaped)
        (m / spool / "x").write_bytes(b"ec data")
        run(["setfattr", "-n", "user.k", "-v", "v", str(m / spool / "x")])
        os.rename(m / spool / "x", m / spool / "y")
        assert run(["rados", "-p", spool, "getxattr", "y", "k"], shaped).stdout == b"v"
        os_fails(lambda: os.rename(m / rep / "o", m / spool / "o"), errno.EXDEV)
        listing = set(run(["rados", "-p", spool, "ls"], shaped).stdout.decode().split())
        assert listing == {"y"}, listing
        assert run(["rados", "-p", rep, "getomapval", "o", "key", "-"], shaped).stdout == b"val"
    finally:
        shaped.ceph("osd", "pool", "rm", rep, rep, "--yes-i-really-really-mean-it")
