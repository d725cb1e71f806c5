"""The page cache and large files through a real mount on the real cluster."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time


from conftest import run


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_random_writes_match_reference(mnt, pool, rados, tmp_path):
    """Random writes at random offsets (one open file), read back and checked in RADOS."""
    rng = random.Random(1234)
    size = 12 << 20
    ref = bytearray(rng.randbytes(size))
    (tmp_path / "base").write_bytes(ref)
    rados(pool, "put", "rw", str(tmp_path / "base"))
    path = mnt / pool / "rw"
    with open(path, "r+b", buffering=0) as f:
        for _ in range(300):
            off = rng.randrange(0, size + (1 << 20))
            n = rng.randrange(1, 300_000)
            data = rng.randbytes(n)
            f.seek(off)
            f.write(data)
            if off > len(ref):
                ref.extend(bytes(off - len(ref)))
            ref[off:off + n] = data
            if rng.random() < 0.2:  # read-after-write through the cache
                roff = rng.randrange(0, len(ref))
                f.seek(roff)
                assert f.read(4096) == bytes(ref[roff:roff + 4096])
    (tmp_path / "ref").write_bytes(ref)
    run(["cmp", str(path), str(tmp_path / "ref")])
    rados(pool, "get", "rw", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == bytes(ref)


def test_partial_write_is_in_place(mnt, pool, rados, tmp_path):
    """A small write in the middle of a big object sends only those bytes to RADOS."""
    (tmp_path / "base").write_bytes(os.urandom(32 << 20))
    rados(pool, "put", "big", str(tmp_path / "base"))
    before = mnt.stats()["cache"]["bytes_written"]
    run(f"printf HELLO | dd of={mnt / pool / 'big'} bs=1 seek=10000000 conv=notrunc")
    written = mnt.stats()["cache"]["bytes_written"] - before
    assert written < 1 << 20, f"{written} bytes written for a 5-byte change"
    rados(pool, "get", "big", str(tmp_path / "back"))
    back = (tmp_path / "back").read_bytes()
    base = (tmp_path / "base").read_bytes()
    assert back[10000000:10000005] == b"HELLO"
    assert back[:10000000] == base[:10000000] and back[10000005:] == base[10000005:]


def test_truncate_drops_cached_pages(mnt, pool, rados, tmp_path):
    path = mnt / pool / "t"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert path.read_bytes() == data  # now cached
    run(["truncate", "-s", "1000000", str(path)])
    run(["truncate", "-s", str(3 << 20), str(path)])
    back = path.read_bytes()
    assert back[:1000000] == data[:1000000]
    assert back[1000000:] == bytes((3 << 20) - 1000000)
    assert rados(pool, "stat", "t").split()[-1] == str(3 << 20).encode()


def test_two_mounts_close_to_open(mount_factory, mnt, pool):
    """After close() on mount A returns, open() on mount B sees the new bytes."""
    other = mount_factory("")
    a, b = mnt / pool / "shared", other / pool / "shared"
    a.write_bytes(b"first version\n")
    assert b.read_bytes() == b"first version\n"
    for i in range(5):
        content = f"version {i} ".encode() * (i * 1000 + 1)
        a.write_bytes(content)          # close() returned: data is in RADOS
        assert b.read_bytes() == content
        b.write_bytes(content + b"from b")
        assert a.read_bytes() == content + b"from b"


def test_striped_round_trip_2gib(mnt, pool, cluster, tmp_path):
    """A 2 GiB file goes in through cp, comes out with `rados --striper get`, and back."""
    src = tmp_path / "src"
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(2048):
            f.write(block[:-8] + i.to_bytes(8, "little"))
    dst = mnt / pool / "two-gig"
    run(["cp", str(src), str(dst)], timeout=900)
    out = tmp_path / "out"
    run(["rados", "-p", pool, "--striper", "get", "two-gig", str(out)], cluster, timeout=900)
    run(["cmp", str(src), str(out)])
    out.unlink()
    run(["cp", str(dst), str(out)], timeout=900)
    run(["cmp", str(src), str(out)])
    objs = run(["rados", "-p", pool, "ls"], cluster).stdout.decode().split()
    assert "two-gig" not in objs and "two-gig.0000000000000000" in objs
    assert len([o for o in objs if o.startswith("two-gig.")]) == 512
    listing = os.listdir(mnt / pool)
    assert "two-gig" in listing and not any(n.startswith("two-gig.") for n in listing)
    assert os.stat(dst).st_size == 2 << 30
    run(["rm", str(dst)])
    assert run(["rados", "-p", pool, "ls"], cluster).stdout.strip() == b""


def test_rados_striper_put_shows_as_one_file(mnt, pool, cluster, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(os.urandom(10 << 20) + b"tail")
    run(["rados", "-p", pool, "--striper", "put", "st", str(src)], cluster)
    assert os.listdir(mnt / pool) == ["st"]
    assert (mnt / pool / "st").stat().st_size == (10 << 20) + 4
    run(["cmp", str(src), str(mnt / pool / "st")])


def test_cache_limit_holds_during_large_copy(mount_factory, pool, tmp_path):
    """RSS stays below cache_size + 150 MiB while a file 3x the cache is copied in and out."""
    m = mount_factory("cache_size=64M")
    pid = m.pid
    assert pid is not None
    src = tmp_path / "src"
    with open(src, "wb") as f:
        for _ in range(192):
            f.write(os.urandom(1 << 20))
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes(pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    try:
        run(["cp", str(src), str(m / pool / "f")], timeout=600)
        run(["cmp", str(src), str(m / pool / "f")], timeout=600)
    finally:
        stop.set()
        t.join()
    s = m.stats()["cache"]
    assert s["cached_bytes"] <= 64 << 20
    assert s["evicted_pages"] > 0
    assert peak[0] < (64 + 150) << 20, f"peak RSS {peak[0] >> 20} MiB"


def test_open_file_is_written_back_within_seconds(mnt, pool, rados, tmp_path):
    """A writer that keeps its file open (a log) still gets its data into RADOS within
    the dirty expiry (5 s), without fsync or close. The writer is its own process: a
    fork of a process holding the file would close the copy at exec, and a close flushes."""
    path = mnt / pool / "log"
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\n"
                               f"f = open({str(path)!r}, 'wb', buffering=0)\n"
                               "f.write(b'first line\\n'); print('written', flush=True)\n"
                               "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
        started = time.monotonic()
        out = tmp_path / "out"
        seen = b""
        while time.monotonic() - started < 20:
            rados(pool, "get", "log", str(out), check=False)
            seen = out.read_bytes() if out.exists() else b""
            if seen == b"first line\n":
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        assert seen == b"first line\n", f"not written back: {seen!r}"
        assert 2 < took < 12, f"written back after {took:.1f}s (expiry is 5 s)"
        assert writer.poll() is None, "the writer must still hold the file open"
    finally:
        writer.kill()
        writer.wait()
