"""The checked pool listing in batches (radosfs/client/listing.py).

* The cursor's close-while-busy rule, in-process and without a cluster: a close while a
  call is inside librados only marks the cursor; the call releases it when it returns.
* In-process on the real cluster (a Connection, no FUSE): a listing is one open and one
  bridge call per batch, `limit=` stops after the batches it needs, the cursor is closed.
* Through the mount (with `RADOSFS_LIST_BATCH=100`): pools and namespaces of more names
  than one batch, and of exact multiples of it, list completely, checked with `rados ls`;
  `limit=` listings (rmdir's emptiness check, the `.ns` directory) still stop early.
"""
from __future__ import annotations

import errno
import os
import threading
import uuid

import pytest
import rados
import trio

from radosfs.client import listing
from radosfs.client.bridge import Bridge
from radosfs.client.connection import ClientConfig, Connection, open_cluster
from radosfs.client.listing import ListCursor
from radosfs.errors import RadosFSError

from conftest import healthy, run

BATCH = 100


# ---- the cursor's close-while-busy logic (no cluster: a cursor never opened holds no
# librados handles, so releasing it frees nothing) -------------------------------------
def test_close_while_a_call_runs_is_left_to_that_call():
    cursor = ListCursor(None, "p", b"")  # type: ignore[arg-type]
    inside, go_on = threading.Event(), threading.Event()

    def stuck_in_librados() -> str:
        inside.set()
        assert go_on.wait(30), "the test never let the call return"
        assert not cursor.released, "released while the call was still running"
        return "batch"

    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(
        cursor._while_busy(stuck_in_librados)))
    worker.start()
    assert inside.wait(30)
    cursor.close()  # the caller gave up: the call was abandoned
    assert not cursor.released, "close released the cursor under a running call"
    cursor.close()  # a second close changes nothing
    go_on.set()
    worker.join(30)
    assert not worker.is_alive()
    assert results == ["batch"]
    assert cursor.released, "the call that returned after close did not release the cursor"
    with pytest.raises(RadosFSError) as exc:
        cursor.next_batch(10)
    assert exc.value.errno == errno.EBADF


def test_close_when_idle_releases_at_once_and_once():
    cursor = ListCursor(None, "p", b"")  # type: ignore[arg-type]
    releases: list[int] = []
    real_release = cursor._release
    cursor._release = lambda: (releases.append(1), real_release())  # type: ignore[method-assign]
    assert cursor._while_busy(lambda: 7) == 7
    assert not cursor.released
    cursor.close()
    cursor.close()
    assert cursor.released and releases == [1]
    with pytest.raises(RadosFSError) as exc:
        cursor.open()
    assert exc.value.errno == errno.EBADF


def test_a_failing_call_after_close_still_releases():
    cursor = ListCursor(None, "p", b"")  # type: ignore[arg-type]

    def fails_after_close() -> None:
        cursor.close()
        raise RadosFSError(errno.EIO, "listing failed")

    with pytest.raises(RadosFSError):
        cursor._while_busy(fails_after_close)
    assert cursor.released


# ---- in-process on the real cluster, through the Connection -----------------------------
def test_listing_is_one_call_per_batch_and_limit_stops_early(cluster, pool, monkeypatch):
    names = [f"n{i:04d}" for i in range(3 * BATCH + 57)]
    put_many(cluster, pool, names)
    monkeypatch.setattr(listing, "LIST_BATCH", BATCH)
    cursors: list[ListCursor] = []
    real_init = ListCursor.__init__

    def spy_init(self, *args, **kw):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kw)
        cursors.append(self)
    monkeypatch.setattr(ListCursor, "__init__", spy_init)
    handle = open_cluster(ClientConfig(conf=str(cluster.conf_path), op_timeout=20))

    async def main() -> None:
        conn = Connection(handle, Bridge(op_timeout=20))
        stats = conn.bridge.stats
        try:
            before = stats["thread_calls"]
            full = await conn.list_names(pool)
            # open + 4 batches (100, 100, 100, 57 and the end) + close (in a worker too)
            assert stats["thread_calls"] - before == 1 + 4 + 1
            assert sorted(n.decode() for n in full) == names
            before = stats["thread_calls"]
            first = await conn.list_names(pool, limit=2 * BATCH + 50)
            assert stats["thread_calls"] - before == 1 + 3 + 1  # 100, 100, 50: no more
            assert first == full[:2 * BATCH + 50]
            assert await conn.list_names(pool, limit=1) == full[:1]
            assert await conn.list_namespaces(pool) == {b""}
        finally:
            conn.close()
    try:
        trio.run(main)
    finally:
        handle.shutdown()
    assert len(cursors) == 4 and all(c.released for c in cursors), "a cursor left open"


# ---- through the mount, with batches of 100 names ----------------------------------------
@pytest.fixture(scope="module")
def batch_mount(mount_factory):
    """A mount whose listings fetch BATCH names per bridge call (pools removable, to
    check that rmdir refuses a pool of many names)."""
    old = os.environ.get("RADOSFS_LIST_BATCH")
    os.environ["RADOSFS_LIST_BATCH"] = str(BATCH)
    try:
        md = mount_factory("allow_pool_delete")
    finally:
        if old is None:
            del os.environ["RADOSFS_LIST_BATCH"]
        else:
            os.environ["RADOSFS_LIST_BATCH"] = old
    yield md
    md.close()


@pytest.fixture
def bm(batch_mount):
    yield from healthy(batch_mount)


def put_many(cluster, pool: str, names: list[str], namespace: str = "") -> None:
    """Create empty objects with a librados aio loop (the rados CLI would take a process
    per object), every completion checked."""
    with rados.Rados(conffile=str(cluster.conf_path)) as handle, \
            handle.open_ioctx(pool) as io:
        if namespace:
            io.set_namespace(namespace)
        comps = [io.aio_write_full(name, name.encode()) for name in names]
        for comp in comps:
            comp.wait_for_complete()
        failed = [c.get_return_value() for c in comps if c.get_return_value() != 0]
        assert not failed, f"aio_write_full failed: {failed[:5]}"


def rados_ls(cluster, pool: str, namespace: str = "") -> set[str]:
    args = ["rados", "-p", pool, "ls"] + (["-N", namespace] if namespace else [])
    return set(run(args, cluster).stdout.decode().split())


@pytest.mark.parametrize("count", [2 * BATCH, 3 * BATCH + 57])
def test_pool_of_more_names_than_one_batch_lists_completely(bm, pool, cluster, count):
    names = [f"obj-{i:05d}" for i in range(count)]
    put_many(cluster, pool, names)
    assert rados_ls(cluster, pool) == set(names)
    listed = os.listdir(bm / pool)
    assert len(listed) == len(set(listed)), "a name listed twice"
    assert set(listed) == set(names)
    # rmdir's emptiness check lists with limit=: it still sees the pool is not empty.
    with pytest.raises(OSError) as exc:
        os.rmdir(bm / pool)
    assert exc.value.errno == errno.ENOTEMPTY
    assert rados_ls(cluster, pool) == set(names)


def test_namespaces_of_more_names_than_one_batch_list_completely(bm, pool, cluster):
    ns_a, ns_b = "a-" + uuid.uuid4().hex[:6], "b-" + uuid.uuid4().hex[:6]
    plain = [f"p{i}" for i in range(BATCH + 1)]
    in_a = [f"a{i}" for i in range(2 * BATCH)]
    in_b = [f"b{i}" for i in range(3)]
    put_many(cluster, pool, plain)
    put_many(cluster, pool, in_a, ns_a)
    put_many(cluster, pool, in_b, ns_b)
    assert rados_ls(cluster, pool, ns_a) == set(in_a)
    # The .ns directory: list_namespaces, a listing of every namespace (304 names).
    assert set(os.listdir(bm / pool / ".ns")) == {ns_a, ns_b}
    assert set(os.listdir(bm / pool / ".ns" / ns_a)) == set(in_a)
    assert set(os.listdir(bm / pool / ".ns" / ns_b)) == set(in_b)
    assert set(os.listdir(bm / pool)) == set(plain)
