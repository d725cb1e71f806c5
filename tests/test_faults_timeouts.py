"""No call waits forever, and the mount recovers by itself (issue 8, section 1).

Real faults on a cluster of this module's own (the session cluster other tests use is never
touched): its mon and OSD are stopped and started again by pid, while real programs run
against the real mount in subprocesses with a timeout of their own -- a program that hangs
fails the test, it never hangs the suite. The OSD is bluestore on a sparse file, so it keeps
its data across a stop.

Figures (op_timeout=5 on the 2-core test machine) are printed with `-s` and summed up in
docs/reliability.md.
"""
from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import Mount, restore_daemons, run

OP_TIMEOUT = 5
# What one failing call may take: the bridge's deadline (op_timeout + 1 s of grace), plus
# the first freshness check of the osdmap after the monitors went away (3 s), plus slack
# for a loaded 2-core machine.
BOUND = OP_TIMEOUT + 1 + 3 + 3
EXIT_BOUND = 3 * OP_TIMEOUT + 15   # write-back + image closes + librados shutdown


def _alive(pid: int) -> bool:
    try:
        return b"radosfs.mount" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def fmount(fcluster, tmp_path):
    """A mount of the fault cluster with a short op_timeout; detached and its daemon gone
    afterwards whatever the test did (killed by pid if it is still there)."""
    mounts: list[tuple[Mount, int]] = []

    def make(options: str = "") -> Mount:
        m = Mount(fcluster, tmp_path / f"m{len(mounts)}",
                  f"op_timeout={OP_TIMEOUT}" + (f",{options}" if options else ""))
        mounts.append((m, m.pid))
        return m

    yield make
    restore_daemons(fcluster)
    for m, pid in mounts:
        m.close()
        deadline = time.monotonic() + EXIT_BOUND
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if os.path.ismount(m.path):
            subprocess.run(["fusermount3", "-uz", str(m.path)], check=False)


@pytest.fixture
def fpool(fcluster):
    name = "f-" + uuid.uuid4().hex[:6]
    fcluster.ceph("osd", "pool", "create", name, "8")
    fcluster.ceph("osd", "pool", "application", "enable", name, "test")
    yield name
    restore_daemons(fcluster)
    fcluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def timed(cmd: list[str], limit: float = 4 * BOUND) -> tuple[subprocess.CompletedProcess, float]:
    """Run a real program; a hang past `limit` is a test failure (TimeoutExpired)."""
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, timeout=limit)
    return res, time.monotonic() - t0


def must_fail_eio(cmd: list[str], bound: float = BOUND) -> float:
    res, took = timed(cmd)
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0, f"{cmd} succeeded with the cluster down"
    assert "Input/output error" in err, f"{cmd}: expected EIO, got {err!r}"
    assert took < bound, f"{cmd} took {took:.1f}s (bound {bound:.0f}s)"
    return took


def wait_works(cmd: list[str], limit: float) -> float:
    """Seconds until `cmd` succeeds (retried); fails the test past `limit`."""
    t0 = time.monotonic()
    while True:
        res, _ = timed(cmd)
        if res.returncode == 0:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit, \
            f"{cmd} still failing {limit:.0f}s after the cluster came back: {res.stderr!r}"
        time.sleep(0.5)


def test_cluster_down_fails_fast_and_recovers(fcluster, fmount, fpool):
    """mon + OSD stopped: cat, ls, stat, touch and df give EIO within the bound (never a
    hang), the log names the call; the cluster back: the same mount serves within seconds."""
    m = fmount()
    f = m / fpool / "file"
    f.write_bytes(b"hello\n")
    fcluster.stop_daemon("osd")
    fcluster.stop_daemon("mon")
    took = {"cat": must_fail_eio(["cat", str(f)]),
            "ls": must_fail_eio(["ls", str(m / fpool)]),
            "stat": must_fail_eio(["stat", str(m / fpool / "other")]),
            "touch": must_fail_eio(["touch", str(m / fpool / "new")]),
            "df": must_fail_eio(["df", str(m.path)])}
    # Asked again: each within the bound again (nothing piles up behind stuck calls).
    took["cat again"] = must_fail_eio(["cat", str(f)])
    log = m.read_log()
    assert "did not answer in time" in log
    assert "aio_stat" in log or "Rados.wait_for_latest_osdmap" in log, log[-2000:]
    down = time.monotonic()
    fcluster.start_daemon("mon")
    fcluster.start_daemon("osd")
    started = time.monotonic() - down
    recovery = wait_works(["cat", str(f)], limit=30)
    assert timed(["cat", str(f)])[0].stdout == b"hello\n"
    run(["touch", str(m / fpool / "after")], timeout=30)
    assert "after" in run(["ls", str(m / fpool)], timeout=30).stdout.decode().split()
    print(f"\ncluster down: {', '.join(f'{k} EIO after {v:.1f}s' for k, v in took.items())}; "
          f"daemons restarted in {started:.1f}s, mount serving again {recovery:.1f}s later")
    assert m.alive()


def test_mon_down_new_names_fail_others_served(fcluster, fmount, fpool):
    """Only the mon stopped: a lookup of a pool the mount does not know fails within the
    bound (librados would wait for the mon without limit), lookups behind it are not
    blocked, and objects are read and written as usual (the OSD is up)."""
    m = fmount()
    f = m / fpool / "file"
    f.write_bytes(b"data\n")
    fcluster.stop_daemon("mon")
    stuck = subprocess.Popen(["stat", str(m / "no-such-pool")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    time.sleep(0.5)
    res, took_other = timed(["cat", str(f)])
    assert res.returncode == 0 and res.stdout == b"data\n", res.stderr
    assert took_other < BOUND, f"cat behind a stuck lookup took {took_other:.1f}s"
    res, took_write = timed(["sh", "-c", f"echo more > {m / fpool / 'new'}"])
    assert res.returncode == 0, res.stderr
    t0 = time.monotonic()
    _, err = stuck.communicate(timeout=4 * BOUND)
    took_new = time.monotonic() - t0 + 0.5
    assert stuck.returncode != 0 and b"Input/output error" in err, err
    assert took_new < BOUND, f"lookup of an unknown pool took {took_new:.1f}s"
    # Asked again while the mon is still gone: at once, not one op_timeout per lookup.
    took_again = must_fail_eio(["stat", str(m / "no-such-pool")], bound=2)
    fcluster.start_daemon("mon")
    print(f"\nmon down: unknown pool EIO after {took_new:.1f}s (again {took_again:.1f}s), "
          f"cat of an object meanwhile {took_other:.2f}s, write {took_write:.2f}s")
    assert run(["cat", str(m / fpool / "new")], timeout=30).stdout == b"more\n"


def _writer(path: pathlib.Path) -> subprocess.Popen:
    """A process that writes 8 MiB into `path`, says so, and closes it when told."""
    code = ("import os, sys, time\n"
            f"f = open({str(path)!r}, 'wb')\n"
            "f.write(os.urandom(8 << 20))\n"
            "print('written', flush=True)\n"
            "sys.stdin.readline()\n"
            "t = time.monotonic()\n"
            "try:\n"
            "    f.close()\n"
            "    print('closed', flush=True)\n"
            "except OSError as e:\n"
            "    print('error', e.errno, round(time.monotonic() - t, 1), flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "written"
    return p


def _wait_exit(pid: int, limit: float) -> float:
    t0 = time.monotonic()
    while _alive(pid):
        assert time.monotonic() - t0 < limit, f"daemon {pid} still running after {limit:.0f}s"
        time.sleep(0.1)
    return time.monotonic() - t0


def _writer_then_cluster_down(fcluster, path):
    """A writer holding unwritten data in `path` open; then the OSD and the mon stop."""
    w = _writer(path)
    fcluster.stop_daemon("osd")
    fcluster.stop_daemon("mon")
    return w


def test_fusermount_with_cluster_down_logs_loss_and_exits(fcluster, fmount, fpool):
    """The cluster gone with unwritten data: close() reports EIO within the bound,
    `fusermount3 -u` works, and the daemon logs the file it could not write back and
    exits within a bound."""
    m = fmount()
    pid = m.pid
    w = _writer_then_cluster_down(fcluster, m / fpool / "unwritten")
    out, _ = w.communicate("close\n", timeout=4 * BOUND)
    assert out.split()[:2] == ["error", str(errno.EIO)], out
    assert float(out.split()[2]) < BOUND, out
    res, took_umount = timed(["fusermount3", "-u", str(m.path)], limit=BOUND)
    assert res.returncode == 0, res.stderr
    took_exit = _wait_exit(pid, EXIT_BOUND)
    log = m.read_log()
    assert f"{fpool}/unwritten could not be written back" in log, log[-3000:]
    assert "unmounted" in log
    assert not os.path.ismount(m.path)
    print(f"\nfusermount3 -u with the cluster down: returned in {took_umount:.2f}s, "
          f"daemon exited {took_exit:.1f}s later, the file logged as lost")


def test_sigterm_with_cluster_down_exits(fcluster, fmount, fpool):
    """SIGTERM while the cluster is down and a file with unwritten data is still open:
    the daemon logs the file, unmounts and exits within a bound; the writer gets an
    error instead of hanging."""
    m = fmount()
    pid = m.pid
    w = _writer_then_cluster_down(fcluster, m / fpool / "open-at-exit")
    os.kill(pid, signal.SIGTERM)
    took_exit = _wait_exit(pid, EXIT_BOUND)
    out, _ = w.communicate("close\n", timeout=30)
    assert not os.path.ismount(m.path)
    log = m.read_log()
    assert f"{fpool}/open-at-exit could not be written back" in log, log[-3000:]
    print(f"\nSIGTERM with the cluster down: daemon exited after {took_exit:.1f}s; "
          f"the writer's close: {out.strip()}")


def test_rm_of_huge_sparse_file_is_quick(fcluster, fmount, fpool):
    """`truncate -s 10T f; rm f` (and a shrink) cost what exists, not the logical size."""
    m = fmount()
    f = m / fpool / "sparse"
    run(["truncate", "-s", "10T", str(f)], timeout=30)
    assert f.stat().st_size == 10 << 40
    # Two pieces really exist: the head and one near 5 TiB.
    run(f"printf x | dd of={f} bs=1 seek={5 << 40} conv=notrunc status=none", timeout=30)
    res, took_shrink = timed(["truncate", "-s", str(6 << 40), str(f)], limit=60)
    assert res.returncode == 0, res.stderr
    res, took_rm = timed(["rm", str(f)], limit=60)
    assert res.returncode == 0, res.stderr
    left = run(["rados", "-p", fpool, "ls"], fcluster).stdout.decode().split()
    assert not [o for o in left if o.startswith("sparse")], left
    assert took_shrink < 5 and took_rm < 5, (took_shrink, took_rm)
    print(f"\n10 TiB sparse file: truncate to 6 TiB {took_shrink:.2f}s, rm {took_rm:.2f}s")


def test_unlink_of_huge_image_does_not_block(fcluster, fmount, fpool):
    """Removing a big image is quick and blocks nothing: the name goes at once, the data
    is purged in the background (rbd trash, the mgr's task); snapshots still give EBUSY."""
    pool = "fi-" + uuid.uuid4().hex[:6]
    fcluster.ceph("osd", "pool", "create", pool, "8")
    run(["rbd", "pool", "init", pool], fcluster)
    try:
        m = fmount()
        img = m / pool / "big"
        run(["truncate", "-s", "2T", str(img)], timeout=60)
        (m / fpool / "x").write_bytes(b"x")
        rm = subprocess.Popen(["rm", str(img)], stderr=subprocess.PIPE)
        t0 = time.monotonic()
        res, took_ls = timed(["ls", str(m / fpool)], limit=30)
        assert res.returncode == 0 and res.stdout.split() == [b"x"]
        _, err = rm.communicate(timeout=60)
        took_rm = time.monotonic() - t0
        assert rm.returncode == 0, err
        assert took_rm < 5, f"rm of a 2 TiB image took {took_rm:.1f}s"
        assert took_ls < 2, f"ls of another pool took {took_ls:.1f}s meanwhile"
        assert b"big" not in run(["rbd", "ls", pool], fcluster).stdout.split()
        assert not os.path.exists(img)
        deadline = time.monotonic() + 120
        while run(["rbd", "trash", "ls", pool], fcluster).stdout.strip():
            assert time.monotonic() < deadline, "the image was never purged from the trash"
            time.sleep(1)
        purged = time.monotonic() - t0
        # With a snapshot: EBUSY, and the image stays.
        run(["truncate", "-s", "1G", str(m / pool / "snapped")], timeout=30)
        run(["rbd", "snap", "create", f"{pool}/snapped@s"], fcluster)
        res, _ = timed(["rm", str(m / pool / "snapped")], limit=30)
        assert res.returncode != 0 and b"busy" in res.stderr, res.stderr
        assert b"snapped" in run(["rbd", "ls", pool], fcluster).stdout.split()
        run(["rbd", "snap", "purge", f"{pool}/snapped"], fcluster)
        print(f"\n2 TiB image: rm {took_rm:.2f}s, ls of another pool meanwhile "
              f"{took_ls:.2f}s, purged by the mgr {purged:.0f}s after")
    finally:
        fcluster.ceph("osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")


# ---- the bridge's deadlines, in this process (no cluster): what a fake librados does late

def test_bridge_abandons_a_stuck_thread_and_frees_its_slot():
    import trio

    from radosfs.client.bridge import Bridge
    from radosfs.errors import RadosFSError

    release = __import__("threading").Event()

    async def main():
        bridge = Bridge(max_threads=1, op_timeout=0.3)
        t0 = trio.current_time()
        with pytest.raises(RadosFSError) as info:
            await bridge.run(release.wait, 30)
        assert info.value.errno == errno.ETIMEDOUT
        assert "Event.wait" in str(info.value)
        assert trio.current_time() - t0 < 1.0
        assert bridge.abandoned == 1
        # The one slot is free again although the stuck thread still runs.
        assert await bridge.run(lambda: 42) == 42
        release.set()
        while bridge.abandoned:
            await trio.sleep(0.01)
        assert bridge.limiter.borrowed_tokens == 0

    trio.run(main)


def test_bridge_late_completion_releases_once_and_keeps_buffers():
    import gc
    import threading
    import weakref

    import trio

    from radosfs.client.bridge import Bridge
    from radosfs.errors import RadosFSError

    class Buffer:
        pass

    class Comp:
        def get_return_value(self):
            return 0

    held: list = []   # what a fake librados keeps until it completes

    async def main():
        bridge = Bridge(op_timeout=0.2)
        buf = Buffer()
        alive = weakref.ref(buf)
        with pytest.raises(RadosFSError) as info:
            await bridge.aio(lambda cb, b=buf: (held.append(cb), b.__class__), 1000)
        assert info.value.errno == errno.ETIMEDOUT
        assert bridge.throttle.ops == 1 and bridge.throttle.bytes == 1000  # librados has it
        del buf, info  # (the traceback holds the call's frame)
        gc.collect()
        assert alive() is not None, "the buffer went while librados may still use it"
        cb = held.pop()
        threading.Thread(target=cb, args=(Comp(),)).start()
        while bridge.throttle.ops:
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert bridge.throttle.ops == 0 and bridge.throttle.bytes == 0
        assert bridge.stats["late_completions"] == 1
        del cb
        gc.collect()
        assert alive() is None

    trio.run(main)


def test_bridge_shared_call_answers_every_waiter():
    """Several callers of one shared call all get its result (or its error)."""
    import threading

    import trio

    from radosfs.client.bridge import Bridge

    async def main():
        bridge = Bridge(op_timeout=5)
        gate = threading.Event()
        results: list = []

        async def ask(fn):
            try:
                results.append(await bridge.run_shared("k", fn))
            except ValueError as exc:
                results.append(repr(exc))

        def answer():
            gate.wait()
            return 7

        def fail():
            gate.wait()
            raise ValueError("no")

        for fn in (answer, fail):
            gate.clear()
            results.clear()
            async with trio.open_nursery() as n:
                for _ in range(3):
                    n.start_soon(ask, fn)
                await trio.sleep(0.1)
                gate.set()
            assert results == ([7] * 3 if fn is answer else ["ValueError('no')"] * 3)

    trio.run(main)
