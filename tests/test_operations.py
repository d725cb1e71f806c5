"""Operations and the node tree in-process, without FUSE (S3QL's t3 layer): the collaborators
the mount command builds, on the real test cluster, driven by calling handlers directly.

Cheaper than a mount for what needs no kernel: dispatch, errno mapping, the tree's
answers; results are checked through the `rados` CLI as in the mount tests.
"""
from __future__ import annotations

import errno
import json
import os

import pyfuse3
import pytest
import trio

from radosfs.cache import PageCache
from radosfs.client.bridge import Bridge
from radosfs.client.connection import ClientConfig, Connection, open_cluster
from radosfs.operations import Operations
from radosfs.options import MountOptions
from radosfs.tree.context import MountContext
from radosfs.tree.kinds import NodeKinds

ROOT = pyfuse3.ROOT_INODE


class Ctx:
    uid, gid, pid, umask = os.getuid(), os.getgid(), os.getpid(), 0o022


@pytest.fixture(scope="module")
def handle(cluster):
    h = open_cluster(ClientConfig(conf=str(cluster.conf_path), op_timeout=20))
    yield h
    h.shutdown()


def in_process(handle, body, **options):
    """Run `body(ops)` in a trio loop with a freshly built mount (no FUSE)."""
    stale: list[int] = []   # inodes whose kernel attributes the mount would invalidate

    async def main():
        conn = Connection(handle, Bridge())
        fs = MountContext(conn, MountOptions(**options), PageCache(64 << 20))
        fs.kinds = NodeKinds(fs)
        ops = Operations(fs, fs.kinds.root(), invalidate=lambda ino, attr_only: stale.append(ino))
        ops.stale = stale
        try:
            async with trio.open_nursery() as nursery:
                fs.cache.nursery = fs.nursery = nursery
                await body(ops)
                assert not await fs.cache.flush_all()
                await fs.images.close_all()
                nursery.cancel_scope.cancel()
        finally:
            for io in conn._ioctx.values():
                io.close()
    trio.run(main)


def errno_of(exc_info) -> int:
    return exc_info.value.errno


def test_create_write_read_rename_unlink(handle, pool, rados):
    async def body(ops: Operations):
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino
        fi, attrs = await ops.create(pool_ino, b"f", 0o100644, os.O_WRONLY, Ctx())
        assert await ops.write(fi.fh, 0, b"hello ") == 6
        assert await ops.write(fi.fh, 6, b"world") == 5
        await ops.release(fi.fh)
        assert rados(pool, "get", "f", "-") == b"hello world"

        fi = await ops.open(attrs.st_ino, os.O_RDONLY, Ctx())
        assert ops.stale == [attrs.st_ino]  # the kernel last heard size 0 (at create)
        assert await ops.read(fi.fh, 0, 100) == b"hello world"
        await ops.release(fi.fh)

        await ops.rename(pool_ino, b"f", pool_ino, b"g", 0, Ctx())
        assert set(rados(pool, "ls").split()) == {b"g"}
        moved = await ops.lookup(pool_ino, b"g")
        assert moved.st_ino == attrs.st_ino and moved.st_size == 11
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(pool_ino, b"f")
        assert errno_of(e) == errno.ENOENT

        await ops.unlink(pool_ino, b"g", Ctx())
        assert rados(pool, "ls") == b""
    in_process(handle, body)


def test_errnos_from_the_tree(handle, pool):
    async def body(ops: Operations):
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino
        cases = [
            (ops.lookup(ROOT, b"no-such-pool-xyz"), errno.ENOENT),
            (ops.create(ROOT, b"f", 0o100644, os.O_WRONLY, Ctx()), errno.EPERM),
            (ops.lookup(pool_ino, b"x" * 256), errno.ENAMETOOLONG),
            (ops.setxattr(pool_ino, b"user.k", b"v", Ctx()), errno.ENOTSUP),
            (ops.getxattr(pool_ino, b"user.k", Ctx()), errno.ENODATA),
            (ops.lookup(pool_ino, b"\xff"), errno.EINVAL),
        ]
        for call, want in cases:
            with pytest.raises(pyfuse3.FUSEError) as e:
                await call
            assert errno_of(e) == want
        snap = (await ops.lookup(pool_ino, b".snap")).st_ino
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.create(snap, b"f", 0o100644, os.O_WRONLY, Ctx())
        assert errno_of(e) == errno.EROFS
    in_process(handle, body)


def test_read_only_mount_refuses_changes(handle, pool, rados):
    rados(pool, "put", "keep", "/etc/hostname")

    async def body(ops: Operations):
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino
        keep = (await ops.lookup(pool_ino, b"keep")).st_ino
        for call in (ops.create(pool_ino, b"n", 0o100644, os.O_WRONLY, Ctx()),
                     ops.unlink(pool_ino, b"keep", Ctx()),
                     ops.mkdir(pool_ino, b"d", 0o755, Ctx()),
                     ops.open(keep, os.O_WRONLY, Ctx()),
                     ops.setxattr(keep, b"user.k", b"v", Ctx())):
            with pytest.raises(pyfuse3.FUSEError) as e:
                await call
            assert errno_of(e) == errno.EROFS
    in_process(handle, body, ro=True)
    assert set(rados(pool, "ls").split()) == {b"keep"}


def test_stats_file_is_a_read_only_node(handle):
    async def body(ops: Operations):
        attrs = await ops.lookup(ROOT, b".radosfs-stats")
        assert attrs.st_mode == 0o100444
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.open(attrs.st_ino, os.O_WRONLY, Ctx())
        assert errno_of(e) == errno.EACCES
        fi = await ops.open(attrs.st_ino, os.O_RDONLY, Ctx())
        assert fi.direct_io
        stats = json.loads(await ops.read(fi.fh, 0, 1 << 16))
        await ops.release(fi.fh)
        assert {"cache", "rados"} <= set(stats)
        assert stats["cache"]["budget"] == 64 << 20
    in_process(handle, body)


def test_forget_drops_the_inodes_the_kernel_forgot(handle, pool, rados):
    """A node leaves the inode table once the kernel has forgotten every lookup of it (a
    new lookup gets a new node and number); a file open with unwritten data stays."""
    rados(pool, "put", "f", "/etc/hostname")

    async def body(ops: Operations):
        table = ops.fs.table
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino
        ino = (await ops.lookup(pool_ino, b"f")).st_ino
        assert (await ops.lookup(pool_ino, b"f")).st_ino == ino   # two lookup counts
        await ops.forget([(ino, 1)])
        assert (await ops.getattr(ino)).st_ino == ino              # one still held
        await ops.forget([(ino, 1)])
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getattr(ino)
        assert errno_of(e) == errno.ENOENT
        assert ino not in table.by_ino and ino not in table.lookups
        again = (await ops.lookup(pool_ino, b"f")).st_ino
        assert again != ino and table.lookups[again] == 1

        # Created, written, not yet flushed: forgotten by the kernel, kept by the mount.
        fi, attrs = await ops.create(pool_ino, b"g", 0o100644, os.O_WRONLY, Ctx())
        await ops.write(fi.fh, 0, b"unwritten")
        await ops.forget([(attrs.st_ino, 1)])
        assert (await ops.getattr(attrs.st_ino)).st_size == 9
        await ops.release(fi.fh)
        # The pool's directory, forgotten, goes too; the root never does.
        await ops.forget([(pool_ino, 1), (ROOT, 1)])
        assert pool_ino not in table.by_ino and ROOT in table.by_ino
        counters = ops.fs.counters()["inodes"]
        assert counters["known"] == len(table.by_ino)
    in_process(handle, body)
    assert rados(pool, "get", "g", "-") == b"unwritten"


def test_open_right_after_lookup_uses_its_answer(handle, pool, rados, monkeypatch):
    """A lookup stats and reads a small file in one round trip; the open and the first
    read right after it use that answer (no RADOS call of their own). Outside the window,
    or after a change made through the mount, the open asks the cluster again."""
    from radosfs.tree import object_file
    rados(pool, "put", "f", "/etc/hostname")
    first = rados(pool, "get", "f", "-")

    async def body(ops: Operations):
        stats = ops.fs.bridge.stats
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino

        async def calls(*steps) -> int:
            before = stats["aio_ops"] + stats["thread_calls"]
            for step in steps:
                await step
            return stats["aio_ops"] + stats["thread_calls"] - before

        monkeypatch.setattr(object_file, "LOOKUP_OPEN_WINDOW", 60.0)
        ino = (await ops.lookup(pool_ino, b"f")).st_ino
        fi = await ops.open(ino, os.O_RDONLY, Ctx())
        got = []

        async def read():
            got.append(await ops.read(fi.fh, 0, 1 << 16))
        assert await calls(read(), ops.release(fi.fh)) == 0
        assert got == [first]

        # Changed by another client after the lookup, opened past the window: seen.
        monkeypatch.setattr(object_file, "LOOKUP_OPEN_WINDOW", 0.0)
        await ops.lookup(pool_ino, b"f")
        rados(pool, "put", "f", "/etc/os-release")
        fi = await ops.open(ino, os.O_RDONLY, Ctx())
        assert await ops.read(fi.fh, 0, 1 << 16) == rados(pool, "get", "f", "-")
        await ops.release(fi.fh)

        # Changed through the mount between the lookup and the open: the open asks.
        monkeypatch.setattr(object_file, "LOOKUP_OPEN_WINDOW", 60.0)
        await ops.lookup(pool_ino, b"f")
        await ops.setxattr(ino, b"user.k", b"v", Ctx())
        opened = []

        async def open_it():
            opened.append(await ops.open(ino, os.O_RDONLY, Ctx()))
        assert await calls(open_it()) >= 1
        await ops.release(opened[0].fh)
    in_process(handle, body)


def test_lookup_of_a_name_not_in_a_fresh_listing_needs_no_round_trip(handle, pool, rados):
    """negative_timeout: in a directory this mount just made, a missing name is answered
    from what the mount knows (no RADOS call) while that knowledge is younger than the
    window; a name the mount made since is found; another client's new name shows once
    the window is over (at once with negative_timeout=0, the default)."""
    async def body(ops: Operations):
        stats = ops.fs.bridge.stats
        pool_ino = (await ops.lookup(ROOT, pool.encode())).st_ino
        d = (await ops.mkdir(pool_ino, b"d", 0o755, Ctx())).st_ino
        before = stats["aio_ops"] + stats["thread_calls"]
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.lookup(d, b"x")
        assert errno_of(e) == errno.ENOENT
        assert stats["aio_ops"] + stats["thread_calls"] == before
        fi, attrs = await ops.create(d, b"x", 0o100644, os.O_WRONLY, Ctx())
        await ops.release(fi.fh)
        assert (await ops.lookup(d, b"x")).st_ino == attrs.st_ino
        rados(pool, "put", "d/y", "/etc/hostname")
        with pytest.raises(pyfuse3.FUSEError) as e:   # inside the window: as documented
            await ops.lookup(d, b"y")
        assert errno_of(e) == errno.ENOENT
        ops.fs.options.negative_timeout = 0.0
        assert (await ops.lookup(d, b"y")).st_size == len(rados(pool, "get", "d/y", "-"))
    in_process(handle, body, negative_timeout=60.0)
    assert set(rados(pool, "ls").split()) == {b"d/", b"d/x", b"d/y"}
