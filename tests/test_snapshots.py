"""`.snap` through the mount, driven by real programs, checked through `rados` / `rbd`.

Object pools: `.snap/NAME` is RADOS pool snapshot NAME (`rados mksnap/lssnap/rmsnap`, read
with `rados -s NAME get`). Image pools: `.snap/NAME` holds every image that has snapshot
NAME (`rbd snap create/ls/rm`, read with `rbd export POOL/IMG@NAME`).

The tests share one mount of their own (a crash of it fails the test that caused it, not
the rest of the suite); tests that are known to be able to kill the daemon get a mount of
their own. After every test the shared mount must still answer and its log must hold no
traceback.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import Mount, healthy, os_fails, rados_get, rbd, rbd_export, run

MiB = 1 << 20
MSG = {errno.EROFS: "Read-only file system", errno.EINVAL: "Invalid argument",
       errno.EBUSY: "Device or resource busy", errno.EEXIST: "File exists",
       errno.ENOENT: "No such file or directory"}


# ---- mounts and pools -------------------------------------------------------------------

def new_mount(cluster, tmp_path_factory, options: str = "") -> Mount:
    path = tmp_path_factory.mktemp("snapmnt") / "m"
    return Mount(cluster, path, options)


@pytest.fixture(scope="module")
def module_mount(cluster, tmp_path_factory):
    m = new_mount(cluster, tmp_path_factory)
    yield m
    m.close()


@pytest.fixture
def m(module_mount):
    """The module's mount; after the test it must be alive with no traceback logged."""
    yield from healthy(module_mount)


@pytest.fixture
def own_mount(cluster, tmp_path_factory):
    """A mount for one test (for operations that have been seen to kill the daemon)."""
    mounts: list[Mount] = []

    def make() -> Mount:
        mounts.append(new_mount(cluster, tmp_path_factory))
        return mounts[-1]

    yield make
    for mm in mounts:
        mm.close()


# ---- CLI helpers --------------------------------------------------------------------------

def rados_put(cluster, pool: str, oid: str, data: bytes, tmp: Path, striper=False) -> None:
    src = tmp / f"put-{uuid.uuid4().hex}"
    src.write_bytes(data)
    run(["rados", "-p", pool, *(["--striper"] if striper else []), "put", oid, str(src)],
        cluster)
    src.unlink()


def lssnap(cluster, pool: str) -> set[str]:
    out = run(["rados", "-p", pool, "lssnap"], cluster).stdout.decode()
    return {line.split("\t")[1] for line in out.splitlines() if line.count("\t") >= 2}


def rbd_snaps(cluster, spec: str) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(rbd(cluster, "snap", "ls", "--format", "json",
                                                 spec))}


def striped_at_snap(cluster, pool: str, name: str, snap: str) -> bytes:
    """A striped file as stored at a pool snapshot, from its pieces with `rados -s get`.

    (`rados --striper -s` refuses: libradosstriper locks the object, a write.) The layout
    radosfs writes and `rados --striper put` uses: stripe_count 1, 4 MiB objects, so the
    file is the concatenation of its pieces, cut at `striper.size`.
    """
    head = f"{name}.{0:016x}"
    size = int(run(["rados", "-p", pool, "-s", snap, "getxattr", head, "striper.size"],
                   cluster).stdout.decode().splitlines()[-1].strip())
    unit = int(run(["rados", "-p", pool, "-s", snap, "getxattr", head,
                    "striper.layout.object_size"], cluster).stdout.decode()
               .splitlines()[-1].strip())
    data = b""
    for i in range((size + unit - 1) // unit):
        piece = rados_get(cluster, pool, f"{name}.{i:016x}", snap)
        data += piece + bytes(unit - len(piece)) if len(piece) < unit else piece
    return data[:size]


def shell_fails(cmd: list[str] | str, err: int, cluster=None) -> None:
    res = run(cmd, cluster, check=False)
    text = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"{cmd} succeeded, expected {errno.errorcode[err]}"
    assert MSG[err] in text, f"{cmd}: expected {MSG[err]!r}, got {text!r}"


def wait_until(pred, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, f"timed out after {timeout}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def files_under(root: Path) -> set[str]:
    return {str((Path(d) / f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs}


def dirs_under(root: Path) -> set[str]:
    return {str((Path(d) / x).relative_to(root)) for d, ds, _ in os.walk(root) for x in ds}


def write_all(f, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def btime_of(path: Path) -> float:
    raw = os.getxattr(path, "ceph.snap.btime").decode()
    assert re.fullmatch(r"\d+\.\d{9}", raw), f"ceph.snap.btime {raw!r} is not secs.nsecs"
    cli = run(["getfattr", "--only-values", "-n", "ceph.snap.btime", str(path)]).stdout
    assert cli.decode() == raw
    return float(raw)


# ==== object pools =========================================================================

def test_pool_snapshot_mkdir_rmdir_and_hidden(cluster, m, pool):
    root = m / pool
    (root / "a").write_bytes(b"alpha")
    (root / "d").mkdir()
    (root / "d" / "b").write_bytes(b"beta")

    run(["mkdir", str(root / ".snap" / "s1")])
    assert lssnap(cluster, pool) == {"s1"}
    assert os.listdir(root / ".snap") == ["s1"]
    assert run(["ls", str(root / ".snap")]).stdout.decode().split() == ["s1"]
    assert sorted(os.listdir(root / ".snap" / "s1")) == ["a", "d"]
    assert (root / ".snap" / "s1" / "d" / "b").read_bytes() == b"beta"
    # a second mkdir of the same name
    shell_fails(["mkdir", str(root / ".snap" / "s1")], errno.EEXIST)

    # .snap is reachable by name but never listed: not by ls -a, find, os.listdir
    assert Path(root / ".snap").is_dir()
    assert ".snap" not in run(["ls", "-a", str(root)]).stdout.decode().split()
    found = run(["find", str(root)]).stdout.decode().splitlines()
    assert not [f for f in found if ".snap" in f], found
    assert set(found) == {str(root), str(root / "a"), str(root / "d"), str(root / "d" / "b")}
    assert ".snap" not in os.listdir(root)
    # a snapshot has no .snap of its own
    assert ".snap" not in run(["ls", "-a", str(root / ".snap" / "s1")]).stdout.decode().split()

    run(["rmdir", str(root / ".snap" / "s1")])
    assert lssnap(cluster, pool) == set()
    assert os.listdir(root / ".snap") == []
    os_fails(os.stat, errno.ENOENT, root / ".snap" / "s1")
    shell_fails(["rmdir", str(root / ".snap" / "s1")], errno.ENOENT)
    # the live files are untouched
    assert (root / "a").read_bytes() == b"alpha"


def test_cli_pool_snapshots_appear_and_go(cluster, m, pool):
    root = m / pool
    (root / "f").write_bytes(b"one")
    run(["rados", "-p", pool, "mksnap", "c1"], cluster)
    wait_until(lambda: "c1" in os.listdir(root / ".snap"), 15, "rados mksnap c1 shown")
    assert (root / ".snap" / "c1" / "f").read_bytes() == b"one"
    (root / "f").write_bytes(b"two")
    assert (root / ".snap" / "c1" / "f").read_bytes() == b"one"
    assert rados_get(cluster, pool, "f", "c1") == b"one"
    run(["rados", "-p", pool, "rmsnap", "c1"], cluster)
    wait_until(lambda: "c1" not in os.listdir(root / ".snap"), 15, "rados rmsnap c1 shown")
    wait_until(lambda: not (root / ".snap" / "c1").exists(), 3, ".snap/c1 gone")

    # crosswise: made by the CLI, removed through the mount, and the other way round
    run(["rados", "-p", pool, "mksnap", "c2"], cluster)
    wait_until(lambda: "c2" in os.listdir(root / ".snap"), 15, "rados mksnap c2 shown")
    run(["rmdir", str(root / ".snap" / "c2")])
    assert lssnap(cluster, pool) == set()
    run(["mkdir", str(root / ".snap" / "m2")])
    assert lssnap(cluster, pool) == {"m2"}
    assert rados_get(cluster, pool, "f", "m2") == b"two"
    run(["rados", "-p", pool, "rmsnap", "m2"], cluster)
    wait_until(lambda: "m2" not in os.listdir(root / ".snap"), 15, "rados rmsnap m2 shown")
    assert os.listdir(root / ".snap") == []


def test_cli_pool_snapshot_is_listed_at_once(cluster, m, pool):
    """Listings are fresh (semantics.md): `rados mksnap X; ls .snap/X` must work, as it
    does for images (`rbd snap create`) and for objects made by other clients."""
    root = m / pool
    (root / "f").write_bytes(b"x")
    os.listdir(root / ".snap")
    run(["rados", "-p", pool, "mksnap", "now"], cluster)
    took = wait_until(lambda: "now" in os.listdir(root / ".snap"), 15, "mksnap shown")
    assert took < 1.0, f"`rados mksnap now` showed in `ls .snap` only after {took:.1f}s"
    assert (root / ".snap" / "now" / "f").read_bytes() == b"x"
    run(["rados", "-p", pool, "rmsnap", "now"], cluster)
    took = wait_until(lambda: "now" not in os.listdir(root / ".snap"), 15, "rmsnap shown")
    assert took < 1.0, f"`rados rmsnap now` left .snap/now listed for {took:.1f}s"


def test_pool_snapshot_reads_unchanged_after_overwrite(cluster, m, pool, tmp_path):
    root = m / pool
    a = os.urandom(100_000)
    b = os.urandom(2 * MiB + 12345)          # several cache pages
    c = b"c" * 5000
    x = os.urandom(30_000)
    (root / "a").write_bytes(a)
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "b").write_bytes(b)
    (root / "c").write_bytes(c)
    rados_put(cluster, pool, "x", x, tmp_path)   # made outside the mount
    # read through the mount first: the cache holds the HEAD pages when we overwrite
    assert (root / "d" / "e" / "b").read_bytes() == b

    run(["mkdir", str(root / ".snap" / "s")])
    a2 = os.urandom(len(a))                  # same size: the change is in the bytes only
    (root / "a").write_bytes(a2)
    with open(root / "d" / "e" / "b", "r+b") as f:
        f.seek(MiB - 10)
        f.write(b"Z" * 50_000)
        f.seek(0, 2)
        f.write(b"appended")
    run(["truncate", "-s", "10", str(root / "c")])
    x2 = os.urandom(len(x))
    rados_put(cluster, pool, "x", x2, tmp_path)

    snap = root / ".snap" / "s"
    for name, old in (("a", a), ("d/e/b", b), ("c", c), ("x", x)):
        assert rados_get(cluster, pool, name, "s") == old, f"rados -s s get {name}"
        assert (snap / name).read_bytes() == old, f".snap/s/{name} changed"
        assert (snap / name).stat().st_size == len(old)
    assert run(["sha256sum", str(snap / "d/e/b")]).stdout.split()[0].decode() == sha(b)
    # and the live files have the new bytes
    assert (root / "a").read_bytes() == a2 == rados_get(cluster, pool, "a")
    assert rados_get(cluster, pool, "d/e/b") == \
        b[:MiB - 10] + b"Z" * 50_000 + b[MiB - 10 + 50_000:] + b"appended"
    assert (root / "c").read_bytes() == c[:10]
    assert (root / "x").read_bytes() == x2
    run(["rmdir", str(snap)])
    assert lssnap(cluster, pool) == set()


def test_deleted_after_snapshot_stays_in_snapshot(cluster, m, pool, tmp_path):
    root = m / pool
    data = {name: os.urandom(1000 + i) for i, name in
            enumerate(["keep", "k1", "k2", "dir/k3", "dir/k5", "only/k4"])}
    (root / "dir").mkdir()
    for name in ("keep", "k1", "dir/k3", "dir/k5"):
        (root / name).write_bytes(data[name])
    for name in ("k2", "only/k4"):
        rados_put(cluster, pool, name, data[name], tmp_path)
    run(["mkdir", str(root / ".snap" / "s")])

    run(["rm", str(root / "k1"), str(root / "dir" / "k3")])
    run(["rados", "-p", pool, "rm", "k2"], cluster)
    run(["rados", "-p", pool, "rm", "only/k4"], cluster)
    time.sleep(1.2)  # attr_timeout: names removed by another client

    snap = root / ".snap" / "s"
    assert files_under(snap) == set(data)
    assert set(run(["find", str(snap), "-type", "f", "-printf", "%P\\n"]).stdout.decode()
               .split()) == set(data)
    for name, old in data.items():
        assert (snap / name).read_bytes() == old == rados_get(cluster, pool, name, "s")
    live = set(run(["find", str(root), "-type", "f", "-printf", "%P\\n"]).stdout.decode()
               .split())
    assert live == {"keep", "dir/k5"}
    for gone in ("k1", "k2", "dir/k3", "only/k4"):
        assert not (root / gone).exists()
    run(["rmdir", str(snap)])


def test_directory_emptied_after_snapshot_is_gone(cluster, m, pool, tmp_path):
    """A pool snapshot keeps deleted objects as whiteouts that `rados ls` still lists:
    they must not keep a directory alive in the live tree."""
    root = m / pool
    rados_put(cluster, pool, "only/x", b"x", tmp_path)
    rados_put(cluster, pool, "keep", b"k", tmp_path)
    run(["mkdir", str(root / ".snap" / "s")])
    run(["rados", "-p", pool, "rm", "only/x"], cluster)
    time.sleep(1.2)  # attr_timeout
    listed = sorted(os.listdir(root))
    assert listed == ["keep"], \
        f"live listing {listed}: 'only' lost its only object after a snapshot"
    assert files_under(root / ".snap" / "s") == {"only/x", "keep"}


def test_rm_r_after_snapshot(cluster, m, pool):
    """`rm -r DIR` of files that a snapshot holds (their whiteouts are still listed by
    RADOS) must work, and the directory must go."""
    root = m / pool
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "f").write_bytes(b"f")
    (root / "tree" / "g").write_bytes(b"g")
    (root / "plain").mkdir()
    (root / "plain" / "h").write_bytes(b"h")
    run(["mkdir", str(root / ".snap" / "s")])
    res = run(["rm", "-r", str(root / "tree")], check=False)
    assert res.returncode == 0, f"rm -r after a snapshot: {res.stderr.decode()!r}"
    assert not (root / "tree").exists()
    run(["rm", str(root / "plain" / "h")])
    res = run(["rmdir", str(root / "plain")], check=False)
    assert res.returncode == 0, f"rmdir of an emptied directory: {res.stderr.decode()!r}"
    assert files_under(root / ".snap" / "s") == {"tree/sub/f", "tree/g", "plain/h"}
    assert files_under(root) == set()


def test_created_after_snapshot_not_in_snapshot(cluster, m, pool, tmp_path):
    root = m / pool
    (root / "old").write_bytes(b"old")
    (root / "dir").mkdir()
    (root / "dir" / "o2").write_bytes(b"o2")
    run(["mkdir", str(root / ".snap" / "s")])

    (root / "n1").write_bytes(b"n1")
    rados_put(cluster, pool, "n2", b"n2", tmp_path)
    (root / "dir" / "n3").write_bytes(b"n3")
    rados_put(cluster, pool, "dir/n4", b"n4", tmp_path)
    time.sleep(1.2)

    snap = root / ".snap" / "s"
    assert {n for n in files_under(snap)} == {"old", "dir/o2"}
    for name in ("n1", "n2", "dir/n3", "dir/n4"):
        os_fails(os.stat, errno.ENOENT, snap / name)
        assert (root / name).exists()
    assert sorted(os.listdir(snap / "dir")) == ["o2"]


def test_directory_created_after_snapshot_not_in_snapshot(cluster, m, pool, tmp_path):
    root = m / pool
    (root / "old").write_bytes(b"old")
    run(["mkdir", str(root / ".snap" / "s")])
    (root / "newdir").mkdir()
    (root / "newdir" / "f").write_bytes(b"f")
    rados_put(cluster, pool, "cli/g", b"g", tmp_path)
    time.sleep(1.2)

    snap = root / ".snap" / "s"
    listed = sorted(os.listdir(snap))
    assert listed == ["old"], f".snap/s lists {listed}: directories made after the snapshot"
    for name in ("newdir", "cli"):
        os_fails(os.stat, errno.ENOENT, snap / name)


def test_striped_files_in_snapshot(cluster, m, pool, tmp_path):
    root = m / pool
    big = os.urandom(70 * MiB)               # moves to the striper layout (> 64 MiB)
    src = tmp_path / "big"
    src.write_bytes(big)
    run(["cp", str(src), str(root / "big")])
    small = os.urandom(9 * MiB + 77)
    rados_put(cluster, pool, "cli", small, tmp_path, striper=True)
    run(["mkdir", str(root / ".snap" / "s")])

    patch = os.urandom(MiB)
    with open(root / "big", "r+b") as f:
        f.seek(10 * MiB + 3)
        f.write(patch)
    with open(root / "cli", "r+b") as f:
        f.write(b"changed")

    snap = root / ".snap" / "s"
    assert sorted(os.listdir(snap)) == ["big", "cli"]
    assert (snap / "big").stat().st_size == len(big)
    assert (snap / "cli").stat().st_size == len(small)
    assert run(["sha256sum", str(snap / "big")]).stdout.split()[0].decode() == sha(big)
    assert (snap / "cli").read_bytes() == small
    assert striped_at_snap(cluster, pool, "big", "s") == big
    assert striped_at_snap(cluster, pool, "cli", "s") == small
    # live: changed
    live = (root / "big").read_bytes()
    assert live[10 * MiB + 3:11 * MiB + 3] == patch and len(live) == len(big)
    assert (root / "cli").read_bytes()[:7] == b"changed"
    run(["rmdir", str(snap)])


def _erofs_everywhere(root: Path, snapdir: Path, file: Path, subdir: Path | None) -> None:
    """Every change under a snapshot fails with EROFS, by shell tools and by os calls,
    whatever modes it shows (the real ones: a file may well show write bits)."""
    live_file = root / "live-target"
    live_file.write_bytes(b"live")
    before = {p: os.lstat(p) for p in (file, snapdir, subdir) if p is not None}
    sh = [
        ["touch", str(snapdir / "new")],                       # create
        ["touch", str(file)],                                  # open for write
        ["sh", "-c", f"echo x >> {file}"],                     # write (append)
        ["dd", "if=/dev/zero", f"of={file}", "bs=1", "count=1", "conv=notrunc"],
        ["truncate", "-s", "0", str(file)],
        ["rm", "-f", str(file)],                               # unlink
        ["mv", str(file), str(snapdir / "renamed")],
        ["mv", str(file), str(root / "moved-out")],
        ["mv", str(live_file), str(snapdir / "moved-in")],
        ["mv", str(snapdir), str(snapdir.parent / "renamed-snap")],
        ["setfattr", "-n", "user.k", "-v", "1", str(file)],
        ["setfattr", "-x", "user.k", str(file)],
        ["setfattr", "-n", "user.k", "-v", "1", str(snapdir)],
        ["setfattr", "-n", "ceph.snap.btime", "-v", "1", str(snapdir)],
        ["mkdir", str(snapdir / "newdir")],
        ["chmod", "600", str(file)],
        ["chmod", "0", str(snapdir)],
        ["ln", "-s", "target", str(snapdir / "symlink")],
        ["ln", str(live_file), str(snapdir / "hardlink")],
        ["mkfifo", str(snapdir / "fifo")],
        ["chown", "4321:4321", str(file)],
        ["touch", "-d", "2001-01-01", str(file)],
        ["cp", str(live_file), str(snapdir / "copied")],
        ["touch", str(snapdir.parent / "file-in-snap-root")],  # create in .snap itself
    ]
    if subdir is not None:
        sh += [["rmdir", str(subdir)], ["mkdir", str(subdir / "deeper")],
               ["rm", "-rf", str(subdir)]]
    for cmd in sh:
        shell_fails(cmd, errno.EROFS)

    ops = [
        (os.open, file, os.O_WRONLY), (os.open, file, os.O_RDWR),
        (os.open, file, os.O_WRONLY | os.O_APPEND), (os.open, file, os.O_WRONLY | os.O_TRUNC),
        (os.open, snapdir / "new", os.O_WRONLY | os.O_CREAT, 0o644),
        (os.truncate, file, 0), (os.unlink, file),
        (os.rename, file, snapdir / "r"), (os.rename, file, root / "r"),
        (os.rename, live_file, snapdir / "r"),
        (os.rename, snapdir, snapdir.parent / "r"),
        (os.setxattr, file, "user.k", b"v"), (os.setxattr, snapdir, "user.k", b"v"),
        (os.removexattr, file, "user.k"),
        (os.mkdir, snapdir / "nd"), (os.utime, file, (0, 0)), (os.chmod, file, 0o600),
        (os.chown, file, 4321, 4321), (os.utime, snapdir, (0, 0)),
    ]
    if subdir is not None:
        ops += [(os.rmdir, subdir), (os.mkdir, subdir / "nd")]
    for fn, *args in ops:
        os_fails(fn, errno.EROFS, *args)

    for p, st in before.items():
        now = os.lstat(p)
        assert (now.st_mode, now.st_uid, now.st_gid, now.st_size, now.st_mtime_ns) == \
            (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns), p
    assert live_file.read_bytes() == b"live"
    assert not (root / "moved-out").exists() and not (root / "r").exists()


def test_pool_snapshot_is_read_only(cluster, m, pool):
    root = m / pool
    (root / "d").mkdir()
    (root / "d" / "b").write_bytes(b"inner")
    (root / "f").write_bytes(b"content")
    run(["setfattr", "-n", "user.k", "-v", "1", str(root / "f")])
    run(["mkdir", str(root / ".snap" / "s")])
    snap = root / ".snap" / "s"
    _erofs_everywhere(root, snap, snap / "f", snap / "d")
    _erofs_everywhere(root, snap, snap / "d" / "b", None)
    # rmdir of a snapshot's directory, and nothing changed anywhere
    assert lssnap(cluster, pool) == {"s"}
    assert (snap / "f").read_bytes() == b"content" == rados_get(cluster, pool, "f", "s")
    assert (snap / "d" / "b").read_bytes() == b"inner"
    assert (root / "f").read_bytes() == b"content"
    assert os.getxattr(snap / "f", "user.k") == b"1"
    run(["rmdir", str(snap)])


def _stat_tree(top: Path) -> dict[str, tuple]:
    """Every path under `top` (relative) -> (type and mode, uid, gid, mtime in ns, data
    or link target)."""
    out: dict[str, tuple] = {}
    for p in sorted(top.rglob("*")):
        st = os.lstat(p)
        if p.is_symlink():
            body: bytes | str = os.readlink(p)
        elif p.is_file():
            body = p.read_bytes()
        else:
            body = ""
        out[str(p.relative_to(top))] = (oct(st.st_mode), st.st_uid, st.st_gid,
                                        st.st_mtime_ns, body)
    return out


def test_restore_from_pool_snapshot_keeps_modes_owners_times(cluster, m, pool, tmp_path):
    """`cp -a`, `rsync -a` and `tar` from `.snap/NAME/` bring back the files' real modes,
    owners and times (the record at the snapshot), not 0444/0555; the snapshot's files
    show them too, and refuse every change."""
    root = m / pool
    (root / "d").mkdir()
    os.chmod(root / "d", 0o750)
    os.chown(root / "d", 1234, 2345)
    (root / "d" / "secret").write_bytes(b"s" * 1000)
    os.chmod(root / "d" / "secret", 0o600)
    os.chown(root / "d" / "secret", 1234, 2345)
    (root / "script").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "script", 0o755)
    (root / "plain").write_bytes(b"plain")
    os.symlink("d/secret", root / "link")
    os.utime(root / "plain", ns=(1_000_000_000_123_456_789, 1_100_000_000_987_654_321))
    os.utime(root / "d" / "secret", ns=(1_200_000_000_000_000_000, 1_300_000_000_000_000_001))
    # The directory's time set last (its creates stamped it in whole seconds): rsync sends
    # no nanoseconds for a whole-second time and then takes a target directory made in
    # that same second as already right, leaving it at "now" -- rsync's quirk, not ours.
    os.utime(root / "d", ns=(1_400_000_000_000_000_000, 1_500_000_000_000_000_007))
    want = _stat_tree(root)
    assert want["d/secret"][:3] == (oct(0o100600), 1234, 2345)
    assert want["script"][0] == oct(0o100755) and want["d"][0] == oct(0o40750)
    run(["mkdir", str(root / ".snap" / "bk")])
    snap = root / ".snap" / "bk"
    # the live files change after the snapshot: the snapshot keeps what they were
    os.chmod(root / "d" / "secret", 0o644)
    os.chown(root / "d" / "secret", 0, 0)
    os.chmod(root / "script", 0o700)
    (root / "plain").write_bytes(b"changed")
    assert _stat_tree(snap) == want
    st = os.stat(snap / "d" / "secret")
    assert oct(st.st_mode) == oct(0o100600) and st.st_mtime_ns == 1_300_000_000_000_000_001
    # the three restores
    restores = {"cp": tmp_path / "cp", "rsync": tmp_path / "rsync", "tar": tmp_path / "tar"}
    run(["cp", "-a", f"{snap}/.", str(restores["cp"])])
    run(["rsync", "-a", f"{snap}/", str(restores["rsync"])])
    restores["tar"].mkdir()
    run(f"tar -C '{snap}' --format=posix -cf - . | tar -C '{restores['tar']}' -xpf - --same-owner")
    for how, dest in restores.items():
        got = _stat_tree(dest)
        if how == "rsync":  # rsync -a sets no symlink times (it is rsync's choice)
            got["link"] = got["link"][:3] + want["link"][3:]
        assert got == want, (how, {k: (got.get(k), v) for k, v in want.items()
                                   if got.get(k) != v})
        # and stat(1), as a user would look
        out = run(["stat", "-c", "%a %u %g %Y", str(dest / "d" / "secret")]).stdout.split()
        assert out == [b"600", b"1234", b"2345", b"1300000000"], how
    # refusals: nothing of the snapshot (nor of HEAD) changes on the cluster
    heads = run(["rados", "-p", pool, "ls"], cluster).stdout
    _erofs_everywhere(root, snap, snap / "d" / "secret", snap / "d")
    assert _stat_tree(snap) == want
    assert rados_get(cluster, pool, "d/secret", "bk") == b"s" * 1000
    assert rados_get(cluster, pool, "plain", "bk") == b"plain"
    assert set(run(["rados", "-p", pool, "ls"], cluster).stdout.split()) == \
        set(heads.split()) | {b"live-target"}
    run(["rmdir", str(snap)])


def test_image_snapshot_shows_the_image_mode(cluster, m, image_pool, tmp_path):
    """An image at a snapshot shows the image's mode and owner (RBD keeps image metadata,
    where the record is, only at HEAD) and the snapshot's time; cp -a keeps them."""
    root = m / image_pool
    (root / "img").write_bytes(b"I" * 8192)
    os.chmod(root / "img", 0o640)
    os.chown(root / "img", 777, 888)
    run(["mkdir", str(root / ".snap" / "s")])
    snap = root / ".snap" / "s"
    st = os.stat(snap / "img")
    assert (oct(st.st_mode), st.st_uid, st.st_gid) == (oct(0o100640), 777, 888)
    run(["cp", "-a", str(snap / "img"), str(tmp_path / "img")])
    st2 = os.stat(tmp_path / "img")
    assert (oct(st2.st_mode), st2.st_uid, st2.st_gid, st2.st_mtime_ns) == \
        (oct(0o100640), 777, 888, st.st_mtime_ns)
    shell_fails(["sh", "-c", f"echo x >> {snap / 'img'}"], errno.EROFS)
    os_fails(os.chmod, errno.EROFS, snap / "img", 0o600)
    assert rbd_export(cluster, f"{image_pool}/img@s") == b"I" * 8192
    run(["rmdir", str(snap)])


def test_bad_snapshot_names(cluster, m, pool, image_pool):
    (m / pool / "f").write_bytes(b"f")
    (m / image_pool / "img").write_bytes(b"i" * 4096)
    for p in (pool, image_pool):
        for bad in ("_x", "_", "__y"):
            shell_fails(["mkdir", str(m / p / ".snap" / bad)], errno.EINVAL)
            os_fails(os.mkdir, errno.EINVAL, m / p / ".snap" / bad)
        assert os.listdir(m / p / ".snap") == []
    assert lssnap(cluster, pool) == set()
    assert rbd_snaps(cluster, f"{image_pool}/img") == {}
    # names that are fine
    run(["mkdir", str(m / pool / ".snap" / "a_b-1.2")])
    assert lssnap(cluster, pool) == {"a_b-1.2"}
    run(["rmdir", str(m / pool / ".snap" / "a_b-1.2")])


def test_pool_snapshot_btime(cluster, m, pool):
    root = m / pool
    (root / "f").write_bytes(b"f")
    t0 = time.time()
    run(["mkdir", str(root / ".snap" / "b1")])
    t1 = time.time()
    bt = btime_of(root / ".snap" / "b1")
    assert t0 - 2 <= bt <= t1 + 1, (t0, bt, t1)
    assert abs((root / ".snap" / "b1").stat().st_mtime - bt) < 1
    # one made outside
    run(["rados", "-p", pool, "mksnap", "b2"], cluster)
    t2 = time.time()
    wait_until(lambda: "b2" in os.listdir(root / ".snap"), 15, "mksnap b2 shown")
    bt2 = btime_of(root / ".snap" / "b2")
    assert t1 - 2 <= bt2 <= t2 + 1
    assert bt2 >= bt


def test_writeback_before_pool_snapshot(cluster, m, pool):
    """Bytes written (not closed, not fsynced) before `mkdir .snap/x` are in snapshot x."""
    root = m / pool
    old = os.urandom(2 * MiB)
    (root / "old").write_bytes(old)
    fresh = os.urandom(3 * MiB + 999)
    patch = os.urandom(MiB + 5)
    f = open(root / "fresh", "wb", buffering=0)
    g = open(root / "old", "r+b", buffering=0)
    try:
        write_all(f, fresh)
        g.seek(700_000)
        write_all(g, patch)
        run(["mkdir", str(root / ".snap" / "x")])   # another process, at once
        expect_old = old[:700_000] + patch + old[700_000 + len(patch):]
        assert rados_get(cluster, pool, "fresh", "x") == fresh
        assert rados_get(cluster, pool, "old", "x") == expect_old
        assert (root / ".snap" / "x" / "fresh").read_bytes() == fresh
        # still open: more bytes now are not in x
        f.write(b"later")
    finally:
        f.close()
        g.close()
    assert rados_get(cluster, pool, "fresh") == fresh + b"later"
    assert rados_get(cluster, pool, "fresh", "x") == fresh


def test_pool_snapshot_refused_where_an_image_exists(cluster, m, pool):
    """An image makes the pool use self-managed snapshots: no pool snapshots (EINVAL)."""
    (m / pool / "obj").write_bytes(b"o")
    rbd(cluster, "create", "--size", "1M", f"{pool}/img")
    start = len(m.read_log())
    shell_fails(["mkdir", str(m / pool / ".snap" / "x")], errno.EINVAL)
    os_fails(os.mkdir, errno.EINVAL, m / pool / ".snap" / "y")
    assert lssnap(cluster, pool) == set()
    assert os.listdir(m / pool / ".snap") == []
    log = m.read_log()[start:]
    assert re.search(rf"mkdir {re.escape(pool)} x: .*self-managed", log), log
    rbd(cluster, "rm", "--no-progress", f"{pool}/img")


def test_pool_snapshot_name_reused_through_mount(cluster, own_mount, pool):
    """A nightly job: mkdir .snap/nightly, back up, rmdir; the next night the same name
    must show the new snapshot (and must not take the mount down)."""
    mm = own_mount()
    root = mm / pool
    (root / "f").write_bytes(b"night-1")
    run(["mkdir", str(root / ".snap" / "nightly")])
    assert (root / ".snap" / "nightly" / "f").read_bytes() == b"night-1"
    run(["rmdir", str(root / ".snap" / "nightly")])
    (root / "f").write_bytes(b"night-2")
    (root / "g").write_bytes(b"new")
    run(["mkdir", str(root / ".snap" / "nightly")])
    assert rados_get(cluster, pool, "f", "nightly") == b"night-2"
    res = run(["cat", str(root / ".snap" / "nightly" / "f")], check=False)
    assert mm.alive(), f"the mount died: cat gave {res.stderr.decode()!r}"
    assert res.stdout == b"night-2", res.stderr.decode()
    assert sorted(os.listdir(root / ".snap" / "nightly")) == ["f", "g"]


def test_pool_snapshot_name_reused_by_cli(cluster, m, pool):
    """Same, with `rados mksnap/rmsnap` outside the mount."""
    root = m / pool
    (root / "f").write_bytes(b"night-1")
    run(["rados", "-p", pool, "mksnap", "nightly"], cluster)
    wait_until(lambda: "nightly" in os.listdir(root / ".snap"), 15, "mksnap shown")
    assert (root / ".snap" / "nightly" / "f").read_bytes() == b"night-1"
    run(["rados", "-p", pool, "rmsnap", "nightly"], cluster)
    wait_until(lambda: "nightly" not in os.listdir(root / ".snap"), 15, "rmsnap shown")
    (root / "f").write_bytes(b"night-2")
    (root / "g").write_bytes(b"new")
    run(["rados", "-p", pool, "mksnap", "nightly"], cluster)
    wait_until(lambda: "nightly" in os.listdir(root / ".snap"), 15, "mksnap shown again")
    time.sleep(1.2)  # attr_timeout
    assert rados_get(cluster, pool, "f", "nightly") == b"night-2"
    assert sorted(os.listdir(root / ".snap" / "nightly")) == ["f", "g"]
    assert (root / ".snap" / "nightly" / "f").read_bytes() == b"night-2"


def test_pool_snapshot_removed_while_file_open(cluster, own_mount, pool):
    """`rmdir .snap/s` while a backup still reads a file of s: the reader may get an
    error, but the mount must survive."""
    mm = own_mount()
    root = mm / pool
    data = os.urandom(6 * MiB)
    (root / "f").write_bytes(data)
    run(["mkdir", str(root / ".snap" / "s")])
    with open(root / ".snap" / "s" / "f", "rb", buffering=0) as f:
        assert f.read(4096) == data[:4096]
        run(["rmdir", str(root / ".snap" / "s")])
        f.seek(5 * MiB)
        try:
            got = f.read(100_000)
            assert got == data[5 * MiB:5 * MiB + 100_000]
        except OSError as exc:
            assert exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED), \
                f"the mount died under the reader: {exc}"
    assert mm.alive(), "the mount died after rmdir .snap/s with a file of s open"
    assert (root / "f").read_bytes() == data


# ==== image pools ==========================================================================

def test_image_snapshot_mkdir_rmdir_and_hidden(cluster, m, image_pool, tmp_path):
    root = m / image_pool
    a = os.urandom(3 * MiB)
    src = tmp_path / "a"
    src.write_bytes(a)
    run(["cp", str(src), str(root / "a")])
    rbd(cluster, "create", "--size", "2M", f"{image_pool}/b")

    run(["mkdir", str(root / ".snap" / "s")])
    for img in ("a", "b"):
        assert set(rbd_snaps(cluster, f"{image_pool}/{img}")) == {"s"}
    assert run(["ls", str(root / ".snap")]).stdout.decode().split() == ["s"]
    assert sorted(os.listdir(root / ".snap" / "s")) == ["a", "b"]
    assert (root / ".snap" / "s" / "a").stat().st_size == len(a)
    assert (root / ".snap" / "s" / "b").stat().st_size == 2 * MiB
    shell_fails(["mkdir", str(root / ".snap" / "s")], errno.EEXIST)

    assert ".snap" not in run(["ls", "-a", str(root)]).stdout.decode().split()
    found = run(["find", str(root)]).stdout.decode().splitlines()
    assert not [f for f in found if ".snap" in f], found
    assert sorted(os.listdir(root)) == ["a", "b"]

    run(["rmdir", str(root / ".snap" / "s")])
    for img in ("a", "b"):
        assert rbd_snaps(cluster, f"{image_pool}/{img}") == {}
    assert os.listdir(root / ".snap") == []
    os_fails(os.stat, errno.ENOENT, root / ".snap" / "s")
    assert rbd_export(cluster, f"{image_pool}/a") == a


def test_cli_image_snapshots_appear_and_go(cluster, m, image_pool):
    root = m / image_pool
    (root / "a").write_bytes(b"A" * 8192)
    (root / "b").write_bytes(b"B" * 8192)
    assert os.listdir(root / ".snap") == []
    rbd(cluster, "snap", "create", f"{image_pool}/a@c")
    assert os.listdir(root / ".snap") == ["c"]
    assert os.listdir(root / ".snap" / "c") == ["a"]      # only the image that has it
    (root / "a").write_bytes(b"a" * 8192)
    assert (root / ".snap" / "c" / "a").read_bytes() == b"A" * 8192 == \
        rbd_export(cluster, f"{image_pool}/a@c")
    rbd(cluster, "snap", "rm", "--no-progress", f"{image_pool}/a@c")
    assert os.listdir(root / ".snap") == []
    wait_until(lambda: not (root / ".snap" / "c").exists(), 3, ".snap/c gone")

    # crosswise: made by the CLI, removed through the mount, and the other way round
    rbd(cluster, "snap", "create", f"{image_pool}/b@c2")
    run(["rmdir", str(root / ".snap" / "c2")])
    assert rbd_snaps(cluster, f"{image_pool}/b") == {}
    run(["mkdir", str(root / ".snap" / "m2")])
    for img in ("a", "b"):
        rbd(cluster, "snap", "rm", "--no-progress", f"{image_pool}/{img}@m2")
    assert os.listdir(root / ".snap") == []


def test_image_snapshot_reads_unchanged_after_overwrite(cluster, m, image_pool, tmp_path):
    root = m / image_pool
    a = os.urandom(5 * MiB + 100)
    b = os.urandom(3 * MiB)
    (root / "a").write_bytes(a)
    (root / "b").write_bytes(b)
    assert (root / "a").read_bytes() == a       # cached pages of HEAD
    run(["mkdir", str(root / ".snap" / "s")])

    patch = os.urandom(2 * MiB)
    psrc = tmp_path / "patch"
    psrc.write_bytes(patch)
    run(["dd", f"if={psrc}", f"of={root / 'a'}", "bs=1M", "seek=1", "conv=notrunc",
         "status=none"])
    run(["truncate", "-s", "8M", str(root / "a")])
    b2 = os.urandom(len(b))
    bsrc = tmp_path / "b2"
    bsrc.write_bytes(b2)
    # b is overwritten by another librbd client
    run([sys.executable, "-c", _RBD_WRITE, image_pool, "b", str(bsrc)], cluster)

    snap = root / ".snap" / "s"
    assert (snap / "a").stat().st_size == len(a)
    assert (snap / "a").read_bytes() == a == rbd_export(cluster, f"{image_pool}/a@s")
    assert (snap / "b").read_bytes() == b == rbd_export(cluster, f"{image_pool}/b@s")
    live_a = a[:MiB] + patch + a[3 * MiB:] + bytes(8 * MiB - len(a))
    assert rbd_export(cluster, f"{image_pool}/a") == live_a
    assert (root / "a").read_bytes() == live_a
    assert rbd_export(cluster, f"{image_pool}/b") == b2 == (root / "b").read_bytes()
    run(["rmdir", str(snap)])


_RBD_WRITE = r"""
import os, sys, rados, rbd
pool, image, src = sys.argv[1:4]
r = rados.Rados(conffile=os.environ['CEPH_CONF'])
r.connect()
io = r.open_ioctx(pool)
with rbd.Image(io, image) as img:
    img.write(open(src, 'rb').read(), 0)
    img.flush()
io.close()
r.shutdown()
"""


def test_image_snapshot_is_read_only(cluster, m, image_pool):
    root = m / image_pool
    (root / "img").write_bytes(b"I" * 65536)
    run(["setfattr", "-n", "user.k", "-v", "1", str(root / "img")])
    run(["mkdir", str(root / ".snap" / "s")])
    snap = root / ".snap" / "s"
    _erofs_everywhere(root, snap, snap / "img", None)
    assert rbd_snaps(cluster, f"{image_pool}/img").keys() == {"s"}
    assert (snap / "img").read_bytes() == b"I" * 65536
    assert rbd_export(cluster, f"{image_pool}/img") == b"I" * 65536
    assert sorted(os.listdir(root)) == ["img", "live-target"]
    run(["rmdir", str(snap)])


def test_image_snapshot_btime(cluster, m, image_pool):
    root = m / image_pool
    (root / "a").write_bytes(b"a")
    t0 = time.time()
    run(["mkdir", str(root / ".snap" / "b1")])
    t1 = time.time()
    bt = btime_of(root / ".snap" / "b1")
    assert t0 - 2 <= bt <= t1 + 1, (t0, bt, t1)
    assert abs((root / ".snap" / "b1").stat().st_mtime - bt) < 1
    rbd(cluster, "snap", "create", f"{image_pool}/a@b2")
    t2 = time.time()
    bt2 = btime_of(root / ".snap" / "b2")
    assert t1 - 2 <= bt2 <= t2 + 1


def test_writeback_before_image_snapshot(cluster, m, image_pool):
    root = m / image_pool
    base = os.urandom(4 * MiB)
    (root / "a").write_bytes(base)
    patch = os.urandom(MiB + 4097)
    tail = os.urandom(300_000)
    g = open(root / "a", "r+b", buffering=0)
    f = open(root / "new", "wb", buffering=0)
    try:
        g.seek(MiB - 7)
        write_all(g, patch)
        g.seek(len(base))
        write_all(g, tail)                # grows the image
        write_all(f, b"N" * 70_000)
        run(["mkdir", str(root / ".snap" / "x")])   # another process, at once
        expect = base[:MiB - 7] + patch + base[MiB - 7 + len(patch):] + tail
        assert rbd_export(cluster, f"{image_pool}/a@x") == expect
        assert rbd_export(cluster, f"{image_pool}/new@x") == b"N" * 70_000
        assert (root / ".snap" / "x" / "a").read_bytes() == expect
    finally:
        g.close()
        f.close()


def _protected_setup(cluster, m, image_pool) -> tuple[str, list[str]]:
    root = m / image_pool
    for name in ("a", "b", "c"):
        (root / name).write_bytes(name.encode() * 4096)
    run(["mkdir", str(root / ".snap" / "p")])
    # protect the image librbd lists last, so that rmdir meets it after the others
    order = rbd(cluster, "ls", image_pool).decode().split()
    rbd(cluster, "snap", "protect", f"{image_pool}/{order[-1]}@p")
    return order[-1], order


def test_protected_image_snapshot_rmdir_is_ebusy(cluster, m, image_pool):
    root = m / image_pool
    protected, _ = _protected_setup(cluster, m, image_pool)
    start = len(m.read_log())
    shell_fails(["rmdir", str(root / ".snap" / "p")], errno.EBUSY)
    os_fails(os.rmdir, errno.EBUSY, root / ".snap" / "p")
    assert rbd_snaps(cluster, f"{image_pool}/{protected}")["p"]["protected"] == "true"
    time.sleep(1.2)  # attr_timeout: the kernel looks .snap/p up again
    assert protected in os.listdir(root / ".snap" / "p")
    log = m.read_log()[start:]
    assert f"{protected}@p" in log, log
    rbd(cluster, "snap", "unprotect", f"{image_pool}/{protected}@p")
    run(["rmdir", str(root / ".snap" / "p")])
    for img in ("a", "b", "c"):
        assert rbd_snaps(cluster, f"{image_pool}/{img}") == {}
    assert os.listdir(root / ".snap") == []


def test_failed_rmdir_leaves_image_snapshot_whole(cluster, m, image_pool):
    """rmdir that fails (EBUSY) must not have removed the snapshot from some images:
    the set of snapshots named p is what a backup of `.snap/p` reads."""
    root = m / image_pool
    protected, order = _protected_setup(cluster, m, image_pool)
    shell_fails(["rmdir", str(root / ".snap" / "p")], errno.EBUSY)
    try:
        have = {img: "p" in rbd_snaps(cluster, f"{image_pool}/{img}") for img in order}
        assert all(have.values()), f"after rmdir failed with EBUSY, snapshot p is left " \
                                   f"only on {[i for i, h in have.items() if h]}"
        assert sorted(os.listdir(root / ".snap" / "p")) == ["a", "b", "c"]
    finally:
        rbd(cluster, "snap", "unprotect", f"{image_pool}/{protected}@p")
        run(["rmdir", str(root / ".snap" / "p")])


def test_image_snapshot_name_reused(cluster, m, image_pool):
    """mkdir .snap/nightly, read, rmdir, change the image, mkdir .snap/nightly again: the
    mount must show the new snapshot, as `rbd export @nightly` does."""
    root = m / image_pool
    one = os.urandom(3 * MiB)
    two = os.urandom(3 * MiB)                  # same size: only the bytes differ
    (root / "a").write_bytes(one)
    run(["mkdir", str(root / ".snap" / "nightly")])
    assert (root / ".snap" / "nightly" / "a").read_bytes() == one
    run(["rmdir", str(root / ".snap" / "nightly")])
    (root / "a").write_bytes(two)
    run(["mkdir", str(root / ".snap" / "nightly")])
    assert rbd_export(cluster, f"{image_pool}/a@nightly") == two
    got = (root / ".snap" / "nightly" / "a").read_bytes()
    assert got == two, "the mount shows the removed snapshot's data under the new one" \
        if got == one else "the mount shows other data"
    run(["rmdir", str(root / ".snap" / "nightly")])


def test_image_pool_without_images(cluster, m, image_pool):
    shell_fails(["mkdir", str(m / image_pool / ".snap" / "x")], errno.ENOENT)
    assert os.listdir(m / image_pool / ".snap") == []
