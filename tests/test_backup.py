"""Backups from `.snap/NAME` with real tools while the live files keep changing.

For an object pool (a tree of 40 files, nested directories, some objects put with `rados`)
and an image pool (two images of a few MiB): take a snapshot with `mkdir .snap/bk`, start
a writer thread that keeps changing the live files through the mount, and back the
snapshot up with `rsync -a`, `tar c` and `restic backup` (restored with `restic restore`).
Every copy must equal the snapshot byte for byte, as the cluster's own CLIs read it
(`rados -s bk get` per object, `rbd export POOL/IMG@bk`), and hold exactly the files
that existed when the snapshot was taken.
"""
from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import Mount, healthy, rados_get, rbd_export, run

MiB = 1 << 20


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_mount(cluster, tmp_path_factory):
    m = Mount(cluster, tmp_path_factory.mktemp("bkmnt") / "m")
    yield m
    m.close()


@pytest.fixture
def m(module_mount):
    yield from healthy(module_mount)


# ---- helpers ------------------------------------------------------------------------------

def files_under(root: Path) -> dict[str, Path]:
    return {str((Path(d) / f).relative_to(root)): Path(d) / f
            for d, _, fs in os.walk(root) for f in fs}


def dirs_under(root: Path) -> set[str]:
    return {str((Path(d) / x).relative_to(root)) for d, ds, _ in os.walk(root) for x in ds}


class Writer(threading.Thread):
    """Keeps changing live files through the mount until stopped."""

    def __init__(self, step) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.stop = threading.Event()
        self.ops = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        rnd = random.Random(7)
        while not self.stop.is_set():
            try:
                self.step(rnd, self.ops)
                self.ops += 1
            except BaseException as exc:  # noqa: BLE001 -- reported by the test
                self.errors.append(exc)
                return

    def wait_ops(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ops < n and not self.errors:
            assert time.monotonic() < deadline, "the writer makes no progress"
            time.sleep(0.02)

    def finish(self) -> int:
        self.stop.set()
        self.join(timeout=60)
        assert not self.is_alive(), "the writer hangs"
        assert not self.errors, f"writing live files failed: {self.errors[0]!r}"
        return self.ops


def back_up(snapdir: Path, work: Path, cluster, writer: Writer) -> dict[str, Path]:
    """rsync, tar and restic copies of `snapdir`, taken while `writer` runs."""
    outs = {}
    before = writer.ops

    out = work / "rsync"
    res = run(["rsync", "-a", f"{snapdir}/", f"{out}/"], check=False)
    assert res.returncode == 0, f"rsync: {res.stderr.decode()}"
    outs["rsync"] = out

    out = work / "tar"
    out.mkdir()
    tarball = work / "backup.tar"
    res = run(["tar", "-C", str(snapdir), "-cf", str(tarball), "."], check=False)
    assert res.returncode == 0, f"tar c: {res.stderr.decode()}"
    run(["tar", "-C", str(out), "-xf", str(tarball)])
    outs["tar"] = out

    env = {"RESTIC_PASSWORD": "radosfs-test", "RESTIC_REPOSITORY": str(work / "repo"),
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    restic = dict(env=dict(os.environ, **env))
    for cmd in (["restic", "init", "-q"], ["restic", "backup", "-q", str(snapdir)],
                ["restic", "restore", "latest", "--target", str(work / "restic")]):
        res = subprocess.run(cmd, capture_output=True, timeout=300, **restic)
        assert res.returncode == 0, f"{cmd}: {res.stderr.decode()}"
    outs["restic"] = work / "restic" / snapdir.relative_to("/")

    assert writer.ops > before, "the writer did nothing while the backups ran"
    return outs


# ---- object pool ----------------------------------------------------------------------------

TREE_DIRS = ["dir1", "dir1/sub", "dir2", "dir2/deep", "dir2/deep/er", "dir3", "emptydir"]
SIZES = [0, 1, 100, 4096, 70_000, 300_000, 1_100_000, 2_500_000]


def make_tree(cluster, root: Path, pool: str, tmp: Path) -> dict[str, bytes]:
    rnd = random.Random(1)
    names = ([f"f{i:02d}" for i in range(8)] + [f"dir1/g{i:02d}" for i in range(8)]
             + [f"dir1/sub/h{i:02d}" for i in range(8)]
             + [f"dir2/deep/er/i{i:02d}" for i in range(8)]
             + [f"dir3/j{i:02d}" for i in range(5)] + ["dir3/empty"])
    tree = {n: (b"" if n == "dir3/empty" else rnd.randbytes(rnd.choice(SIZES)))
            for n in names}
    for d in TREE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for n, data in tree.items():
        (root / n).write_bytes(data)
    for n in ("dir2/ext0", "ext1"):             # made outside the mount
        tree[n] = rnd.randbytes(200_000)
        src = tmp / "put"
        src.write_bytes(tree[n])
        run(["rados", "-p", pool, "put", n, str(src)], cluster)
    assert len(tree) == 40
    return tree


def test_backup_object_pool_snapshot_while_writing(cluster, m, pool, tmp_path):
    root = m / pool
    tree = make_tree(cluster, root, pool, tmp_path)
    run(["mkdir", str(root / ".snap" / "bk")])
    snapdir = root / ".snap" / "bk"

    doomed = ["f01", "dir1/g03", "dir1/sub/h05", "dir2/ext0"]
    survivors = [n for n in tree if n not in doomed]

    def step(rnd: random.Random, i: int) -> None:
        if i < len(doomed):
            os.unlink(root / doomed[i])           # deleted after the snapshot
            return
        name = rnd.choice(survivors)
        kind = i % 4
        if kind == 0:
            (root / name).write_bytes(rnd.randbytes(rnd.randrange(1, 200_000)))
        elif kind == 1:
            with open(root / name, "ab") as f:
                f.write(b"appended" * 4096)
        elif kind == 2:
            with open(root / name, "r+b") as f:
                f.write(rnd.randbytes(16384))
                os.fsync(f.fileno())
        else:                                     # created after the snapshot
            d = rnd.choice(["", "dir1", "dir1/sub", "dir3"])
            (root / d / f"new-{i}").write_bytes(rnd.randbytes(5000))

    writer = Writer(step)
    writer.start()
    try:
        writer.wait_ops(len(doomed) + 4)
        outs = back_up(snapdir, tmp_path, cluster, writer)
    finally:
        ops = writer.finish()
    assert ops >= 10

    # the snapshot as the cluster reads it: what we wrote before mkdir, byte for byte
    expect = {n: rados_get(cluster, pool, n, "bk") for n in tree}
    assert expect == tree
    # the live pool did change meanwhile
    live = files_under(root)
    assert not set(doomed) & set(live)
    assert any(n.rsplit("/", 1)[-1].startswith("new-") for n in live)
    assert sum(rados_get(cluster, pool, n) != tree[n] for n in survivors) >= 3

    for tool, out in outs.items():
        got = files_under(out)
        assert set(got) == set(tree), f"{tool}: extra {sorted(set(got) - set(tree))}, " \
                                      f"missing {sorted(set(tree) - set(got))}"
        for n, data in expect.items():
            assert got[n].read_bytes() == data, f"{tool}: {n} differs from rados -s bk get"
        assert dirs_under(out) == set(TREE_DIRS), f"{tool}: directories {dirs_under(out)}"

    run(["rmdir", str(snapdir)])
    assert b"0 snaps" in run(["rados", "-p", pool, "lssnap"], cluster).stdout


def test_backup_has_no_directory_made_after_snapshot(cluster, m, pool, tmp_path):
    """A directory made after the snapshot must not turn up (empty) in the backup."""
    root = m / pool
    (root / "a").mkdir()
    (root / "a" / "f").write_bytes(b"f")
    run(["mkdir", str(root / ".snap" / "bk")])
    (root / "later" / "deeper").mkdir(parents=True)
    (root / "later" / "deeper" / "g").write_bytes(b"g")
    time.sleep(1.2)
    out = tmp_path / "rsync"
    run(["rsync", "-a", f"{root / '.snap' / 'bk'}/", f"{out}/"])
    assert set(files_under(out)) == {"a/f"}
    assert dirs_under(out) == {"a"}, f"rsync of .snap/bk made {sorted(dirs_under(out))}"
    run(["rmdir", str(root / ".snap" / "bk")])


# ---- image pool -----------------------------------------------------------------------------

def test_backup_image_pool_snapshot_while_writing(cluster, m, image_pool, tmp_path):
    root = m / image_pool
    images = {"vm-a": os.urandom(4 * MiB + 123), "vm-b": os.urandom(6 * MiB)}
    for name, data in images.items():
        src = tmp_path / f"{name}.raw"
        src.write_bytes(data)
        run(["cp", str(src), str(root / name)])
    run(["mkdir", str(root / ".snap" / "bk")])
    snapdir = root / ".snap" / "bk"

    def step(rnd: random.Random, i: int) -> None:
        name = rnd.choice(sorted(images))
        with open(root / name, "r+b") as f:
            if i % 7 == 6 and name == "vm-b":
                f.seek(0, 2)                      # grow the live image
                f.write(rnd.randbytes(64 * 1024))
            else:
                f.seek(rnd.randrange(0, 4 * MiB))
                f.write(rnd.randbytes(rnd.choice([4096, 65536, MiB])))
            if i % 3 == 0:
                os.fsync(f.fileno())

    writer = Writer(step)
    writer.start()
    try:
        writer.wait_ops(3)
        outs = back_up(snapdir, tmp_path, cluster, writer)
    finally:
        ops = writer.finish()
    assert ops >= 5

    expect = {n: rbd_export(cluster, f"{image_pool}/{n}@bk") for n in images}
    assert expect == images
    for n in images:
        assert rbd_export(cluster, f"{image_pool}/{n}") != images[n], f"{n} never changed"
    for tool, out in outs.items():
        got = files_under(out)
        assert set(got) == set(images), f"{tool}: {sorted(got)}"
        for n, data in expect.items():
            assert got[n].read_bytes() == data, f"{tool}: {n} differs from rbd export @bk"

    run(["rmdir", str(snapdir)])
    for n in images:
        assert run(["rbd", "snap", "ls", f"{image_pool}/{n}"], cluster).stdout.strip() == b""


# ---- found by this harness --------------------------------------------------------------------

def test_root_listing_while_pools_are_removed(cluster, tmp_path):
    """`ls /mnt/ceph` right after another client removed a pool (as the pool fixtures'
    teardown does) must not fail: a pool that just went away is simply not listed.

    A fresh mount's osdmap lags a few seconds, so the gone pool is still in its pool
    list; once its 5 s "not an rbd pool" answer has expired, the mount asks again."""
    mm = Mount(cluster, tmp_path / "m")
    try:
        name = f"gone-{uuid.uuid4().hex[:8]}"
        cluster.ceph("osd", "pool", "create", name, "8")
        deadline = time.monotonic() + 15
        while name not in os.listdir(mm.path):    # the mount has seen the new pool
            assert time.monotonic() < deadline, f"pool {name} never listed"
            time.sleep(0.1)
        time.sleep(5.5)
        cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")
        errors = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                os.listdir(mm.path)
            except OSError as exc:
                errors.append(exc)
            time.sleep(0.05)
        bad = [line for line in mm.read_log().splitlines() if "unexpected failure" in line]
        assert not errors, f"{len(errors)} listings of the mount root failed " \
                           f"({errors[0]!r}); log: {bad[:1]}"
    finally:
        mm.close()
