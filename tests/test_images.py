"""RBD image pools through the mount, driven by real programs, checked through `rbd`.

Every test works in a fresh pool initialised for RBD (`rbd pool init`), shown as
`mnt / pool`: its images are regular files. What the mount did is checked with the `rbd` /
`rados` CLIs (or a separate librbd client), never through radosfs itself. The last tests
drive `radosfs.store.image_backend.ImageBackend` in-process (snapshot views, version tokens).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import fails, fsync_retrying, rbd, rbd_export, run

MiB = 1 << 20

# A separate librbd client (its own process and Rados handle): `python - POOL IMAGE ...`.
RBD_WRITER = r"""
import sys, rados, rbd
pool, image, offset, byte, length, repeat = sys.argv[1:7]
import os
r = rados.Rados(conffile=os.environ['CEPH_CONF'])
r.conf_set('rbd_cache', 'false')
r.connect()
io = r.open_ioctx(pool)
with rbd.Image(io, image) as img:
    for _ in range(int(repeat)):
        img.write(bytes([int(byte)]) * int(length), int(offset))
    img.flush()
io.close()
r.shutdown()
"""

META_WRITER = r"""
import os, sys, rados, rbd
r = rados.Rados(conffile=os.environ['CEPH_CONF'])
r.connect()
io = r.open_ioctx(sys.argv[1])
with rbd.Image(io, sys.argv[2]) as img:
    img.metadata_set('empty', '')
    img.metadata_set('later', 'v')
    img.metadata_set('bin', b'\xfe\xff')
io.close()
r.shutdown()
"""


# ---- helpers ----------------------------------------------------------------------------

@pytest.fixture
def rbd_pool(cluster, mnt):
    """A fresh pool with application 'rbd' (as `rbd pool init` makes it), removed after."""
    name = "r-" + uuid.uuid4().hex[:8]
    cluster.ceph("osd", "pool", "create", name, "8")
    run(["rbd", "pool", "init", name], cluster)
    yield name
    cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def rbd_info(cluster, spec: str) -> dict:
    return json.loads(rbd(cluster, "info", "--format", "json", spec))


def rbd_ls(cluster, pool: str) -> set[str]:
    return set(rbd(cluster, "ls", pool).decode().split())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def external_write(cluster, pool: str, image: str, offset: int, byte: int, length: int,
                   repeat: int = 1) -> None:
    run([sys.executable, "-c", RBD_WRITER, pool, image, str(offset), str(byte), str(length),
         str(repeat)], cluster)


# ---- data through real programs -----------------------------------------------------------

def test_cp_export_dd_sha256(cluster, mnt, rbd_pool, tmp_path):
    data = os.urandom(20 * MiB)
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    run(["cp", str(src), str(mnt / rbd_pool / "vm1")])

    assert rbd_info(cluster, f"{rbd_pool}/vm1")["size"] == len(data)
    assert rbd_export(cluster, f"{rbd_pool}/vm1") == data
    assert (mnt / rbd_pool / "vm1").stat().st_size == len(data)

    out = tmp_path / "out"
    run(["dd", f"if={mnt / rbd_pool / 'vm1'}", f"of={out}", "bs=4M"])
    assert out.read_bytes() == data

    mine = run(["sha256sum", str(mnt / rbd_pool / "vm1")]).stdout.split()[0].decode()
    theirs = run(f"rbd export --no-progress {rbd_pool}/vm1 - | sha256sum", cluster
                 ).stdout.split()[0].decode()
    assert mine == theirs == sha256(data)


def test_truncate_grows_and_shrinks(cluster, mnt, rbd_pool, tmp_path):
    path = mnt / rbd_pool / "t"
    data = os.urandom(6 * MiB + 123)
    path.write_bytes(data)
    spec = f"{rbd_pool}/t"
    assert rbd_info(cluster, spec)["size"] == len(data)

    run(["truncate", "-s", "30M", str(path)])
    assert rbd_info(cluster, spec)["size"] == 30 * MiB
    assert path.stat().st_size == 30 * MiB
    assert rbd_export(cluster, spec) == data + bytes(30 * MiB - len(data))

    # Shrink into the middle of an object (not on a boundary), then grow again: the
    # bytes past the cut are gone for good (zeros), not uncovered again.
    cut = 5 * MiB + 4097
    run(["truncate", "-s", str(cut), str(path)])
    assert rbd_info(cluster, spec)["size"] == cut
    assert path.stat().st_size == cut
    assert rbd_export(cluster, spec) == data[:cut]
    run(["truncate", "-s", "8M", str(path)])
    assert rbd_export(cluster, spec) == data[:cut] + bytes(8 * MiB - cut)
    assert path.read_bytes() == data[:cut] + bytes(8 * MiB - cut)

    run(["truncate", "-s", "0", str(path)])
    assert rbd_info(cluster, spec)["size"] == 0
    assert path.read_bytes() == b""


def test_write_past_end_grows(cluster, mnt, rbd_pool, tmp_path):
    path = mnt / rbd_pool / "grow"
    head = os.urandom(MiB)
    path.write_bytes(head)
    tail = os.urandom(3000)
    src = tmp_path / "tail"
    src.write_bytes(tail)
    seek = 9 * MiB + 17
    run(["dd", f"if={src}", f"of={path}", "bs=1", f"seek={seek}", "conv=notrunc",
         "status=none"])
    size = seek + len(tail)
    assert rbd_info(cluster, f"{rbd_pool}/grow")["size"] == size
    assert path.stat().st_size == size
    expect = head + bytes(seek - len(head)) + tail
    assert rbd_export(cluster, f"{rbd_pool}/grow") == expect
    # A write crossing the end in the middle of an object (appending to the file).
    more = os.urandom(5 * MiB)
    with open(path, "ab") as f:
        f.write(more)
    assert rbd_export(cluster, f"{rbd_pool}/grow") == expect + more


def test_partial_write_in_the_middle(cluster, mnt, rbd_pool, tmp_path):
    spec = f"{rbd_pool}/mid"
    data = os.urandom(12 * MiB)
    (mnt / rbd_pool / "mid").write_bytes(data)
    patch = os.urandom(3 * MiB + 5)
    src = tmp_path / "patch"
    src.write_bytes(patch)
    offset = 3 * MiB + 4095   # crosses 1 MiB pages and a 4 MiB object boundary
    run(["dd", f"if={src}", f"of={mnt / rbd_pool / 'mid'}", "bs=1M", f"seek={offset}",
         "oflag=seek_bytes", "conv=notrunc", "status=none"])
    expect = data[:offset] + patch + data[offset + len(patch):]
    got = rbd_export(cluster, spec)
    assert len(got) == len(data)
    assert got == expect
    changed = [i for i in range(0, len(data), 4096) if got[i:i + 4096] != data[i:i + 4096]]
    assert changed[0] == (offset // 4096) * 4096
    assert changed[-1] < offset + len(patch)


# O_DIRECT through the mount, in a separate process (pwritev/preadv with page-aligned mmap
# buffers, as fio's libaio engine does): phase 1 writes, prints WRITTEN and waits for a line
# on stdin while the file stays open (the test looks at the image meanwhile); phase 2 reads.
DIRECT_IO = r"""
import mmap, os, random, sys
path, seed, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
buf = mmap.mmap(-1, 4096)
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
cached = os.open(path, os.O_RDWR)   # an ordinary descriptor on the same file
ref = {}
# a buffered write first: it stays in radosfs' cache (dirty), and O_DIRECT must see it
os.pwrite(cached, b"B" * 4096, 4096)
ref[4096] = b"B" * 4096
for _ in range(64):
    off = rng.randrange(size // 4096) * 4096
    data = rng.randbytes(4096)
    buf[:] = data
    assert os.pwritev(fd, [buf], off) == 4096
    ref[off] = data
for off, data in sorted(ref.items()):
    print(off, data.hex())
print("WRITTEN", flush=True)
sys.stdin.readline()
for off, data in ref.items():
    assert os.preadv(fd, [buf], off) == 4096
    assert bytes(buf) == data, f"O_DIRECT read at {off}"
    assert os.pread(cached, 4096, off) == data, f"buffered read at {off}"
os.close(cached)
os.close(fd)
print("READ", flush=True)
"""


def test_o_direct_random_4k_io_reaches_the_image_at_once_and_agrees_with_buffered_io(
        cluster, mnt, rbd_pool, tmp_path):
    """O_DIRECT writes go to librbd before they return (the image has them while the file
    is still open, no flush); O_DIRECT reads and buffered reads on the same file see every
    write, buffered or direct (a dirty page in the cache wins over the image)."""
    size = 16 * MiB
    base = os.urandom(size)
    (tmp_path / "base").write_bytes(base)
    run(["rbd", "import", "--no-progress", str(tmp_path / "base"), f"{rbd_pool}/d"], cluster)
    path = mnt / rbd_pool / "d"
    before = mnt.stats()["cache"]
    proc = subprocess.Popen([sys.executable, "-c", DIRECT_IO, str(path), "5", str(size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        written: dict[int, bytes] = {}
        for line in proc.stdout:
            if line.strip() == "WRITTEN":
                break
            off, hexdata = line.split()
            written[int(off)] = bytes.fromhex(hexdata)
        else:
            raise AssertionError(f"writer failed: {proc.stderr.read()}")
        expect = bytearray(base)
        for off, data in written.items():
            expect[off:off + 4096] = data
        got = rbd_export(cluster, f"{rbd_pool}/d")
        # every O_DIRECT write is in the image already (those into page 0, which holds the
        # buffered write, went through the cache like it: close writes them)
        for off, data in written.items():
            if off // MiB != 0:
                assert got[off:off + 4096] == data, off
        out, err = proc.communicate("\n", timeout=120)
        assert proc.returncode == 0 and out.strip() == "READ", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rbd_export(cluster, f"{rbd_pool}/d") == expect   # after close: all of it
    assert path.read_bytes() == expect
    after = mnt.stats()["cache"]
    direct = sum(1 for off in written if off // MiB != 0)
    assert after["direct_writes"] - before["direct_writes"] >= direct
    assert after["direct_reads"] > before["direct_reads"]


def test_new_file_is_empty_image_with_default_features(cluster, mnt, rbd_pool):
    run(["touch", str(mnt / rbd_pool / "empty")])
    info = rbd_info(cluster, f"{rbd_pool}/empty")
    assert info["size"] == 0
    rbd(cluster, "create", "--size", "0", f"{rbd_pool}/cli")
    assert sorted(info["features"]) == sorted(rbd_info(cluster, f"{rbd_pool}/cli")["features"])
    assert info["order"] == 22
    assert (mnt / rbd_pool / "empty").stat().st_size == 0
    # `printf > new` (the rbd-fuse create bug wrote into another image): the bytes land here
    run(f"printf ZZZZ > {mnt / rbd_pool / 'new2'}")
    assert rbd_export(cluster, f"{rbd_pool}/new2") == b"ZZZZ"
    assert rbd_export(cluster, f"{rbd_pool}/empty") == b""


def test_rm_removes_image(cluster, mnt, rbd_pool):
    (mnt / rbd_pool / "gone").write_bytes(os.urandom(MiB))
    assert "gone" in rbd_ls(cluster, rbd_pool)
    run(["rm", str(mnt / rbd_pool / "gone")])
    assert "gone" not in rbd_ls(cluster, rbd_pool)
    assert not (mnt / rbd_pool / "gone").exists()
    fails(["rm", str(mnt / rbd_pool / "gone")], "No such file")


def test_rm_image_with_snapshots_is_ebusy(cluster, mnt, rbd_pool):
    (mnt / rbd_pool / "snapped").write_bytes(b"x" * 4096)
    rbd(cluster, "snap", "create", f"{rbd_pool}/snapped@s1")
    fails(["rm", str(mnt / rbd_pool / "snapped")], "Device or resource busy")
    assert "snapped" in rbd_ls(cluster, rbd_pool)
    rbd(cluster, "snap", "purge", f"{rbd_pool}/snapped")
    run(["rm", str(mnt / rbd_pool / "snapped")])
    assert "snapped" not in rbd_ls(cluster, rbd_pool)


def test_mv_renames(cluster, mnt, rbd_pool):
    data = os.urandom(2 * MiB + 7)
    (mnt / rbd_pool / "a").write_bytes(data)
    image_id = rbd_info(cluster, f"{rbd_pool}/a")["id"]
    run(["mv", str(mnt / rbd_pool / "a"), str(mnt / rbd_pool / "b")])
    assert rbd_ls(cluster, rbd_pool) == {"b"}
    assert rbd_export(cluster, f"{rbd_pool}/b") == data
    assert (mnt / rbd_pool / "b").read_bytes() == data
    assert not (mnt / rbd_pool / "a").exists()
    assert rbd_info(cluster, f"{rbd_pool}/b")["id"] == image_id, "mv copied instead of renaming"
    # Replacing an existing image.
    (mnt / rbd_pool / "c").write_bytes(b"old")
    os.rename(mnt / rbd_pool / "b", mnt / rbd_pool / "c")
    assert rbd_ls(cluster, rbd_pool) == {"c"}
    assert rbd_info(cluster, f"{rbd_pool}/c")["id"] == image_id
    assert rbd_export(cluster, f"{rbd_pool}/c") == data


def test_cli_images_appear(cluster, mnt, rbd_pool, tmp_path):
    rbd(cluster, "create", "--size", "8M", f"{rbd_pool}/made")
    assert (mnt / rbd_pool / "made").stat().st_size == 8 * MiB
    assert (mnt / rbd_pool / "made").read_bytes() == bytes(8 * MiB)

    data = os.urandom(5 * MiB + 333)
    src = tmp_path / "imp.raw"
    src.write_bytes(data)
    rbd(cluster, "import", "--no-progress", str(src), f"{rbd_pool}/imported")
    assert (mnt / rbd_pool / "imported").stat().st_size == len(data)
    assert (mnt / rbd_pool / "imported").read_bytes() == data
    # `rbd import --image-size`-style resize by the CLI shows at the next stat
    rbd(cluster, "resize", "--size", "16M", f"{rbd_pool}/made")
    deadline = time.monotonic() + 5
    while (mnt / rbd_pool / "made").stat().st_size != 16 * MiB:
        assert time.monotonic() < deadline, "resize by rbd not seen"
        time.sleep(0.2)
    assert sorted(os.listdir(mnt / rbd_pool)) == ["imported", "made"]


def test_rbd_internal_objects_not_listed(cluster, mnt, rbd_pool):
    (mnt / rbd_pool / "img").write_bytes(os.urandom(5 * MiB))
    objects = set(run(["rados", "-p", rbd_pool, "ls"], cluster).stdout.decode().split())
    assert {"rbd_directory", "rbd_info"} <= objects
    assert any(o.startswith("rbd_header.") for o in objects)
    assert any(o.startswith("rbd_data.") for o in objects)
    assert os.listdir(mnt / rbd_pool) == ["img"]
    for name in ("rbd_directory", "rbd_info", next(o for o in objects
                                                    if o.startswith("rbd_header."))):
        assert not (mnt / rbd_pool / name).exists()
    # ls -l: attributes of every image (stat'ed concurrently)
    for i in range(20):
        rbd(cluster, "create", "--size", f"{i + 1}M", f"{rbd_pool}/many{i:02d}")
    out = run(["ls", "-l", str(mnt / rbd_pool)]).stdout.decode()
    sizes = {line.split()[-1]: int(line.split()[4]) for line in out.splitlines()[1:]}
    assert sizes == {"img": 5 * MiB, **{f"many{i:02d}": (i + 1) * MiB for i in range(20)}}


def rbd_namespaces(cluster, pool: str) -> list[str]:
    return [n["name"] for n in json.loads(rbd(cluster, "namespace", "ls", pool,
                                              "--format", "json"))]


def test_directories_are_rbd_namespaces(cluster, mnt, rbd_pool):
    """The only directories of an image pool are its RBD namespaces (test_namespaces.py)."""
    run(["mkdir", str(mnt / rbd_pool / "d")])
    assert rbd_namespaces(cluster, rbd_pool) == ["d"]
    fails(["mkdir", str(mnt / rbd_pool / "d" / "sub")], "Operation not permitted")
    (mnt / rbd_pool / "f").write_bytes(b"1")
    fails(["rmdir", str(mnt / rbd_pool / "f")], "Not a directory")
    assert rbd_ls(cluster, rbd_pool) == {"f"}
    run(["rmdir", str(mnt / rbd_pool / "d")])
    assert rbd_namespaces(cluster, rbd_pool) == []


def test_xattrs_are_image_metadata(cluster, mnt, rbd_pool):
    path = mnt / rbd_pool / "meta"
    path.write_bytes(b"m")
    os.setxattr(path, "user.owner", b"alice")
    assert rbd(cluster, "image-meta", "get", f"{rbd_pool}/meta", "owner").strip() == b"alice"
    rbd(cluster, "image-meta", "set", f"{rbd_pool}/meta", "team", "storage")
    assert os.getxattr(path, "user.team") == b"storage"
    assert sorted(os.listxattr(path)) == ["user.owner", "user.team"]
    os.removexattr(path, "user.owner")
    assert b"owner" not in rbd(cluster, "image-meta", "list", f"{rbd_pool}/meta")
    with pytest.raises(OSError) as e:
        os.getxattr(path, "user.owner")
    assert e.value.errno == errno.ENODATA
    for bad in (b"\xff\x00", b""):
        with pytest.raises(OSError) as e:
            os.setxattr(path, "user.bad", bad)
        assert e.value.errno == errno.EINVAL
    # Values another librbd client stored that the Python binding cannot list (an empty
    # one shifts its key/value pairing, a binary one raises): read as stored.
    run([sys.executable, "-c", META_WRITER, rbd_pool, "meta"], cluster)
    assert sorted(os.listxattr(path)) == ["user.bin", "user.empty", "user.later",
                                          "user.team"]
    assert os.getxattr(path, "user.empty") == b""
    assert os.getxattr(path, "user.bin") == b"\xfe\xff"
    assert os.getxattr(path, "user.later") == b"v"


def test_mtime_is_modify_timestamp(cluster, mnt, rbd_pool):
    rbd(cluster, "create", "--size", "1M", f"{rbd_pool}/stamp")
    info = rbd_info(cluster, f"{rbd_pool}/stamp")
    stamp = time.mktime(time.strptime(info["modify_timestamp"], "%a %b %d %H:%M:%S %Y"))
    assert abs((mnt / rbd_pool / "stamp").stat().st_mtime - stamp) < 1.5
    # utimens is accepted (touch works) and ignored
    run(["touch", str(mnt / rbd_pool / "stamp")])


# ---- two writers --------------------------------------------------------------------------

def test_two_writers(cluster, mnt, rbd_pool, tmp_path):
    """The mount and another librbd client write the same image at the same time.

    What a user sees: both succeed, neither hangs (the exclusive lock moves between the
    two clients as each writes); for every range the data is that of whoever wrote it last.
    A file already open through the mount does not see the other client's writes
    (close-to-open: the cache revalidates when the file is opened again).
    """
    path = mnt / rbd_pool / "shared"
    spec = f"{rbd_pool}/shared"
    a = os.urandom(16 * MiB)
    src = tmp_path / "a.raw"
    src.write_bytes(a)
    run(["cp", str(src), str(path)])

    # 1. At the same time: the mount rewrites the image five times (fsync each time) while
    #    `rbd bench` writes 64 MiB of random 64 KiB writes all over it.
    env = dict(os.environ, **cluster.env())
    bench = subprocess.Popen(["rbd", "bench", "--io-type", "write", "--io-size", "64K",
                              "--io-threads", "4", "--io-total", "64M", "--io-pattern",
                              "rand", spec], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    for _ in range(5):
        run(["dd", f"if={src}", f"of={path}", "bs=1M", "conv=notrunc,fsync", "status=none"],
            timeout=120)
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err.decode(errors="replace")
    assert rbd_info(cluster, spec)["size"] == 16 * MiB
    # The mount wrote last (after bench ended), everywhere.
    run(["dd", f"if={src}", f"of={path}", "bs=1M", "conv=notrunc,fsync", "status=none"])
    assert rbd_export(cluster, spec) == a

    # 2. Concurrent writers on disjoint ranges: each keeps its own.
    writer = subprocess.Popen([sys.executable, "-c", RBD_WRITER, rbd_pool, "shared",
                               str(8 * MiB), "66", str(4 * MiB), "20"], env=env,
                              stderr=subprocess.PIPE)
    b = os.urandom(4 * MiB)
    with open(path, "r+b") as f:
        for _ in range(10):
            f.seek(MiB)
            f.write(b)
            f.flush()
            os.fsync(f.fileno())
    assert writer.wait(timeout=120) == 0, writer.stderr.read().decode(errors="replace")
    expect = a[:MiB] + b + a[5 * MiB:8 * MiB] + b"B" * (4 * MiB) + a[12 * MiB:]
    assert rbd_export(cluster, spec) == expect

    # 3. Overlapping writes in a known order: the last writer wins, range by range, and
    #    the mount shows the other client's bytes at the next open.
    external_write(cluster, rbd_pool, "shared", 2 * MiB, ord("C"), MiB)
    expect = expect[:2 * MiB] + b"C" * MiB + expect[3 * MiB:]
    assert path.read_bytes() == expect
    d = os.urandom(MiB)
    with open(path, "r+b") as f:
        f.seek(2 * MiB + MiB // 2)
        f.write(d)
    expect = expect[:2 * MiB + MiB // 2] + d + expect[3 * MiB + MiB // 2:]
    assert rbd_export(cluster, spec) == expect
    assert path.read_bytes() == expect


# ---- the backend in-process -----------------------------------------------------------------

def _in_process(cluster, body) -> None:
    """Run `await body(bridge, rados_handle)` under trio, in this process."""
    import rados
    import trio

    from radosfs.client.bridge import Bridge

    handle = rados.Rados(conffile=str(cluster.conf_path))
    handle.conf_set("rbd_cache", "false")
    handle.connect()
    try:
        async def main():
            bridge = Bridge()
            await body(bridge, handle)
        trio.run(main)
    finally:
        handle.shutdown()


def test_backend_snapshot_view_and_version_token(cluster, rbd_pool):
    import trio

    from radosfs.errors import RadosFSError
    from radosfs.store.image_backend import HeaderProbe, ImageBackend
    from radosfs.store.rbd_cls import image_attrs, image_id_of

    rbd(cluster, "create", "--size", "4M", f"{rbd_pool}/s")
    external_write(cluster, rbd_pool, "s", 0, ord("1"), 4096)
    rbd(cluster, "snap", "create", f"{rbd_pool}/s@one")
    external_write(cluster, rbd_pool, "s", 0, ord("2"), 4096)

    async def body(bridge, handle):
        io = handle.open_ioctx(rbd_pool)
        probe = HeaderProbe(handle.open_ioctx(rbd_pool))
        image_id = await image_id_of(bridge, io, "s")
        with pytest.raises(RadosFSError) as e:
            await image_id_of(bridge, io, "nope")
        assert e.value.errno == errno.ENOENT
        assert (await image_attrs(bridge, io, image_id))[0] == 4 * MiB

        snap = ImageBackend(bridge, io, rbd_pool, image_id, snapshot="one", probe=probe)
        head = ImageBackend(bridge, io, rbd_pool, image_id, probe=probe)
        try:
            assert snap.read_only and not head.read_only
            assert await snap.read(0, 4) == b"1111"
            assert await head.read(0, 4) == b"2222"
            assert head.write_unit == 4 * MiB
            with pytest.raises(RadosFSError) as e:
                await snap.write(0, b"x")
            assert e.value.errno == errno.EROFS
            # reads at and past the end: empty / short, never EINVAL
            assert await head.read(4 * MiB, 10) == b""
            assert await head.read(5 * MiB, 10) == b""
            assert len(await head.read(4 * MiB - 3, 10)) == 3

            v1 = await head.version()
            assert v1 == await head.version()          # nothing changed: same token
            sv = await snap.version()
            # Another client writes: its exclusive-lock acquisition changes the token.
            await trio.to_thread.run_sync(external_write, cluster, rbd_pool, "s", 0,
                                          ord("3"), 10)
            v2 = await head.version()
            assert v2 != v1
            assert await head.read(0, 4) == b"3333"
            assert await snap.version() == sv          # the snapshot never changes
            assert await snap.read(0, 4) == b"1111"

            # Our own write + flush, then the token is stable again.
            await head.write(4 * MiB - 2, b"abcd")     # crosses the end: grows first
            await head.flush()
            assert await head.size() == 4 * MiB + 2
            v3 = await head.version()
            assert v3 == await head.version()
            # Concurrent growth never shrinks: the largest end wins.
            async with trio.open_nursery() as n:
                for k in range(8):
                    n.start_soon(head.write, 5 * MiB + k * 100_000, b"z" * 1000)
            assert await head.size() == 5 * MiB + 7 * 100_000 + 1000
            await head.truncate(MiB)
            assert await head.size() == MiB

            # close() is safe at any time: the next call opens the image again
            await head.close()
            assert not head.is_open
            assert await head.read(0, 4) == b"3333"
            assert head.opens == 2
        finally:
            await head.close()
            await snap.close()
            probe.close()
            io.close()

    _in_process(cluster, body)
    # Nothing of ours left open on the image.
    assert b"watcher=" not in rbd(cluster, "status", f"{rbd_pool}/s")


def test_rm_at_a_pool_quota_says_edquot_and_works_once_lifted(cluster, mnt, rbd_pool):
    """At a pool quota librbd cannot remove an image (`rbd rm` neither: the removal goes
    through the RBD trash, whose trash_add gets EDQUOT, and the rolled-back move says
    ENOENT). `rm` through the mount gave ENOENT for an image that is there; now EDQUOT
    with one log line saying to raise the quota. An image whose write-back failed at the
    quota (EDQUOT at close) keeps its data, and once the quota is lifted every `rm` works
    (that one's unwritten data is written first, as ever)."""
    d = mnt / rbd_pool
    for i in range(60):
        (d / f"q{i:02}").touch()       # made before the quota: only their data is refused
    cluster.ceph("osd", "pool", "set-quota", rbd_pool, "max_bytes", str(1 << 20))
    try:
        refused = None
        deadline = time.monotonic() + 90
        # The OSDs learn of the quota with the next statistics report: keep writing.
        for i in range(60):
            try:
                with open(d / f"q{i:02}", "wb") as f:
                    f.write(b"%02d" % i * (1 << 19))
            except OSError as exc:
                assert exc.errno in (errno.EDQUOT, errno.ENOSPC), exc
                refused = f"q{i:02}"
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert refused is not None, "no image refused its data"
        for name in ("q00", refused):
            with pytest.raises(OSError) as ei:
                os.unlink(d / name)
            assert ei.value.errno == errno.EDQUOT, ei.value
        assert "raise the quota first" in mnt.read_log()
    finally:
        cluster.ceph("osd", "pool", "set-quota", rbd_pool, "max_bytes", "0")
    deadline = time.monotonic() + 90
    fsync_retrying(d / refused, deadline)   # the OSDs learn of it with their next report
    assert (d / refused).read_bytes() == refused[1:].encode() * (1 << 19)
    assert rbd_export(cluster, f"{rbd_pool}/{refused}") == refused[1:].encode() * (1 << 19)
    for name in sorted(os.listdir(d)):
        while True:
            try:
                os.unlink(d / name)
                break
            except OSError as exc:
                if exc.errno != errno.EDQUOT or time.monotonic() > deadline:
                    raise
                time.sleep(1)
    assert os.listdir(d) == []
    assert rbd(cluster, "ls", rbd_pool) == b""
    assert "Traceback" not in mnt.read_log()


def test_write_after_another_client_shrank_the_open_image(cluster, mnt, rbd_pool):
    """Another client shrinks an image the mount has open (`rbd resize --allow-shrink`):
    the mount's known size is stale, and a write below it but past the new end was sent
    as it was -- librbd clips writes to the image's size: EINVAL from the write-back, at
    every retry. Now the EINVAL makes it refresh the size, grow the image again and
    resend: the bytes land (the last writer wins, as with any two writers)."""
    path = mnt / rbd_pool / "s"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * 8192, 0)
        os.fsync(fd)
        run(["rbd", "resize", "--no-progress", "--allow-shrink", "--size", "0",
             f"{rbd_pool}/s"], cluster)
        os.pwrite(fd, b"late" * 25, 4000)
        os.fsync(fd)
    finally:
        os.close(fd)
    got = rbd_export(cluster, f"{rbd_pool}/s")
    assert len(got) >= 4100 and got[4000:4100] == b"late" * 25, (len(got), got[4000:4100])
    assert "Traceback" not in mnt.read_log()
