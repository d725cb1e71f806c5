"""Plain regression tests for the failures tests/test_model.py found (issue 7).

Each test is a shrunk sequence Hypothesis reported, written out as a normal test through
the real mount and checked as the model checks it (against POSIX, and through the
cluster's own tools). Each failed before the issue-7 fixes (the two image ones before
ImageFile.remove wrote back first and kept open files detached).
"""
from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time

import pytest

from conftest import rados_get, rbd_export, run

KiB = 1 << 10
MiB = 1 << 20


def objects(cluster, pool: str) -> set[str]:
    """The pool's objects as `rados ls` lists them (less radosfs's flag object)."""
    return set(run(["rados", "-p", pool, "ls"], cluster).stdout.decode().split()) \
        - {".radosfs-attrs"}


def create(path) -> int:
    return os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)


def close_quietly(fd: int) -> int | None:
    """close(2); the errno it gave, if any (the descriptor is released either way)."""
    try:
        os.close(fd)
    except OSError as exc:
        return exc.errno
    return None


def settle() -> None:
    """Let the current second pass: radosfs revalidates by whole-second mtime, so another
    mount's cached view is only reliably stale-checked for changes in a later second."""
    time.sleep(int(time.time()) + 1.05 - time.time())


@pytest.fixture(scope="module")
def m2(mount_factory):
    """A second mount of the same cluster (another client)."""
    return mount_factory("")


# ---- striped files ------------------------------------------------------------------------

def test_striped_file_reads_zeros_past_the_end_of_a_short_piece(mnt, pool):
    """Model: a striped file truncated to 0 and grown to 18929 bytes read back
    `e12c01...` instead of zeros; `rados --striper get` gave zeros.

    Piece 0 exists with 0 bytes; the cache reads the file's only (short) page from it, and
    librados' aio_read at or past an object's end completes with 0 but hands over a buffer
    of the full length with whatever the heap held. Reads below the 128 KiB mmap threshold
    come from the heap, so after some I/O of random data they are garbage, not zeros.
    """
    rng = random.Random(7)
    bad = []
    for i in range(6):
        path = str(mnt / pool / f"s{i}")
        fd = create(path)
        try:
            junk = rng.randbytes(300 * KiB)
            os.pwrite(fd, junk, 0)
            os.fsync(fd)
            for off in range(0, len(junk), 20 * KiB):   # heap full of non-zero bytes
                assert os.pread(fd, 20 * KiB, off) == junk[off:off + 20 * KiB]
            os.ftruncate(fd, 70 * MiB)                  # past 64 MiB: now striped
            os.ftruncate(fd, 0)                         # piece 0 stays, with 0 bytes
            size = 18929 + i * 1000
            os.ftruncate(fd, size)
            got = os.pread(fd, size, 0)
            if got != bytes(size):
                bad.append((i, got[:16].hex()))
        finally:
            os.close(fd)
            os.unlink(path)
    assert not bad, f"non-zero bytes read where the file has none: {bad}"


# ---- open descriptors of unlinked files -----------------------------------------------------

def test_write_after_unlink_does_not_recreate_the_file(cluster, mnt, pool):
    """Model: start(a); unlink(a); pwrite(fd, 1 byte at 0); close(fd) -> `a` listed again."""
    path = mnt / pool / "a"
    fd = create(path)
    os.unlink(path)
    try:
        os.pwrite(fd, b"x", 0)   # POSIX: goes to the unlinked file (may fail here)
    except OSError:
        pass
    close_quietly(fd)
    assert not path.exists()
    assert os.listdir(mnt / pool) == []
    assert objects(cluster, pool) == set()


def test_write_after_unlink_stays_out_of_a_new_file_of_that_name(cluster, mnt, pool):
    """Model: start(a); unlink(a); pwrite(fd0, 1 byte at 0); open(a, O_CREAT); remount ->
    the new `a` had the old descriptor's byte (size 1, should be empty)."""
    path = mnt / pool / "a"
    old = create(path)
    os.unlink(path)
    try:
        os.pwrite(old, b"\x9c", 0)
    except OSError:
        pass
    new = create(path)           # a new, empty file of the same name
    os.close(new)
    close_quietly(old)           # flushes what the old descriptor wrote
    assert os.stat(path).st_size == 0
    assert path.read_bytes() == b""
    assert rados_get(cluster, pool, "a") == b""


def test_read_after_unlink_returns_what_was_written_or_fails(mnt, pool):
    """Model: start(a); unlink(a); pwrite(fd, b'\\x9c', 0); pread(fd, 226, 0) -> b''.

    POSIX reads back the byte; radosfs may refuse I/O on an unlinked file with an errno,
    but must not answer with other data (here: an empty read, as if the file were empty).
    """
    path = mnt / pool / "a"
    fd = create(path)
    try:
        os.unlink(path)
        try:
            os.pwrite(fd, b"\x9c", 0)
            got = os.pread(fd, 226, 0)
        except OSError:
            return
        assert got == b"\x9c"
    finally:
        close_quietly(fd)


# ---- open descriptors of renamed files ------------------------------------------------------

def test_fsync_after_rename_of_an_open_file(mnt, pool):
    """Model: start(b); rename(b, a); fsync(fd) -> ENOENT."""
    fd = create(mnt / pool / "b")
    try:
        os.rename(mnt / pool / "b", mnt / pool / "a")
        os.fsync(fd)
    finally:
        close_quietly(fd)


def test_stat_after_rename_shows_what_the_open_descriptor_wrote(mnt, pool):
    """Model: start(b); rename(b, a); pwrite(fd, 1 byte at 0) -> stat(a).st_size 0 != 1."""
    fd = create(mnt / pool / "b")
    try:
        os.rename(mnt / pool / "b", mnt / pool / "a")
        os.pwrite(fd, b"z", 0)
        assert os.fstat(fd).st_size == 1
        assert os.stat(mnt / pool / "a").st_size == 1
    finally:
        close_quietly(fd)


def test_write_after_rename_goes_to_the_new_name(cluster, mnt, pool):
    """Model: rename of an open file, then writes through its descriptor and close: the
    old name was listed again and the new one lacked the data."""
    fd = create(mnt / pool / "b")
    try:
        os.pwrite(fd, b"hello ", 0)
        os.rename(mnt / pool / "b", mnt / pool / "a")
        os.pwrite(fd, b"world", 6)
    finally:
        err = close_quietly(fd)
    assert err is None, f"close gave {errno.errorcode.get(err)}"
    assert sorted(os.listdir(mnt / pool)) == ["a"]
    assert (mnt / pool / "a").read_bytes() == b"hello world"
    assert objects(cluster, pool) == {"a"}
    assert rados_get(cluster, pool, "a") == b"hello world"


def test_ftruncate_after_rename_resizes_the_file_at_its_new_name(cluster, mnt, pool):
    """Model: start(b); rename(b, a); ftruncate(fd, 1 MiB); pread(fd, 1, 1 MiB - 836) ->
    b'' instead of a zero byte: the truncate went to the file at its new name, reads through
    the descriptor still go to the cache entry of the old one."""
    fd = create(mnt / pool / "b")
    try:
        os.rename(mnt / pool / "b", mnt / pool / "a")
        os.ftruncate(fd, MiB)
        assert os.pread(fd, 1, MiB - 836) == b"\0"
        assert os.stat(mnt / pool / "a").st_size == MiB
        assert not (mnt / pool / "b").exists()
    finally:
        close_quietly(fd)
    assert objects(cluster, pool) == {"a"}


# ---- another client sees a file change between plain and striped -----------------------------

def test_second_mount_reads_a_file_that_became_striped(mnt, m2, pool):
    """Model: a file read through the second mount, then grown past 64 MiB through the
    first (so it moved to the striped layout), then read through the second: ENOENT."""
    a, b = mnt / pool / "f", m2 / pool / "f"
    a.write_bytes(b"small\n")
    assert b.read_bytes() == b"small\n"
    with open(a, "r+b") as f:
        f.truncate(66 * MiB)                   # past STRIPE_THRESHOLD: striped now
        f.seek(65 * MiB)
        f.write(b"tail")
    settle()
    with open(b, "rb") as f:
        assert f.read(6) == b"small\n"
        f.seek(65 * MiB)
        assert f.read(4) == b"tail"
    assert os.stat(b).st_size == 66 * MiB


def test_second_mount_sees_a_same_size_write_past_a_striped_files_head(cluster, mnt, m2,
                                                                      pool, tmp_path):
    """Model, seed 9, object pool (7,900 steps): a striped file cached by the second mount,
    then 928 bytes written at 8 MiB - 1 through the first (pieces 1 and 2; the size
    unchanged), closed: the second mount's next open kept serving zeros there, because the
    file's version is its head's (size, mtime) and nothing had touched the head."""
    a, b = mnt / pool / "c", m2 / pool / "c"
    with open(a, "wb") as f:
        f.truncate(70 * MiB)                   # striped
    settle()
    with open(b, "rb") as f:
        assert f.read() == bytes(70 * MiB)     # cached there now
    before = os.stat(a).st_mtime
    settle()
    data = random.randbytes(928)
    fd = os.open(a, os.O_WRONLY)
    os.pwrite(fd, data, 8 * MiB - 1)
    os.close(fd)
    assert os.stat(a).st_mtime > before        # stat shows the change
    settle()
    with open(b, "rb") as f:
        f.seek(8 * MiB - 1)
        assert f.read(928) == data
    # Last: `rados --striper get` takes the striper's lock on the head, which stamps it.
    out = tmp_path / "c"
    run(["rados", "-p", pool, "--striper", "get", "c", str(out)], cluster)
    with open(out, "rb") as f:
        f.seek(8 * MiB - 1)
        assert f.read(928) == data
    out.unlink()
    a.unlink()


def test_second_mount_reads_a_file_that_became_plain(mnt, m2, pool):
    """The other direction: striped when the second mount read it, then removed and
    written again small (a plain object) through the first mount."""
    a, b = mnt / pool / "f", m2 / pool / "f"
    with open(a, "wb") as f:
        f.truncate(66 * MiB)
        f.write(b"head")
    with open(b, "rb") as f:
        assert f.read(4) == b"head"
    os.unlink(a)
    a.write_bytes(b"plain now\n")
    settle()
    assert b.read_bytes() == b"plain now\n"


# ---- image files ------------------------------------------------------------------------------

def test_image_unlink_refused_keeps_the_open_files_data(cluster, mnt, image_pool):
    """Model (image pool): b open and written; unlink(b) refused with EBUSY (another
    client had the image open); pwrite through b's descriptor -> stat(b).st_size 0 !=
    680335. Here EBUSY comes from a snapshot (deterministic, same path in radosfs)."""
    path = mnt / image_pool / "b"
    fd = create(path)
    try:
        os.pwrite(fd, b"A" * 4096, 0)
        os.fsync(fd)
        run(["rbd", "snap", "create", f"{image_pool}/b@s"], cluster)
        os.pwrite(fd, b"B" * 4096, 4096)             # not written back yet
        with pytest.raises(OSError) as ei:
            os.unlink(path)
        assert ei.value.errno == errno.EBUSY
        assert path.exists()
        os.pwrite(fd, b"C" * 100, 680235)
        assert os.fstat(fd).st_size == 680335
        assert os.stat(path).st_size == 680335
    finally:
        err = close_quietly(fd)
    assert err is None
    want = b"A" * 4096 + b"B" * 4096 + bytes(680235 - 8192) + b"C" * 100
    assert path.read_bytes() == want
    assert rbd_export(cluster, f"{image_pool}/b") == want
    run(["rbd", "snap", "purge", "--no-progress", f"{image_pool}/b"], cluster)


def test_image_read_after_unlink_returns_what_was_written_or_fails(mnt, image_pool):
    """Model (image pool): start(a); pwrite(1 byte at 1 MiB); pwrite(1 byte at 0);
    unlink(a); pread near the end -> 0x00 where 0xe1 was written. (The fstat, as the
    model does after every step, keeps the kernel from asking for the attributes again
    before the read; that getattr would fail with ENOENT, which would be fine.)"""
    path = mnt / image_pool / "a"
    fd = create(path)
    try:
        os.pwrite(fd, b"\xe1", MiB)
        os.pwrite(fd, b"\x42", 0)
        assert os.fstat(fd).st_size == MiB + 1
        os.unlink(path)
        try:
            got = os.pread(fd, 64 * KiB, MiB - 60499)
        except OSError:
            return
        assert got == bytes(60499) + b"\xe1"
    finally:
        close_quietly(fd)


def test_second_mount_opens_the_image_now_at_a_name_replaced_elsewhere(mnt, m2, image_pool):
    """Found by the long model run (image pool, 6,651 steps in): the second mount had
    read image `a`; the first replaced it (rename over it); the second mount's `cat a`,
    within the kernel's entry timeout, opened the old image (still readable by id in the
    trash: its 0 bytes instead of the new file; once purged: ENOENT for a name that exists).
    Now open checks the name's image id: ESTALE makes the kernel look the name up again."""
    a, b = mnt / image_pool / "a", mnt / image_pool / "b"
    a.write_bytes(b"")
    assert (m2 / image_pool / "a").read_bytes() == b""
    data = os.urandom(552414)
    b.write_bytes(data)
    deadline = time.monotonic() + 20
    while True:
        os.stat(m2 / image_pool / "a")  # m2's dentry of `a`: fresh for the next second
        try:
            os.rename(b, a)  # EBUSY while m2 still has its old `a` open (idle close, 5 s)
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    for _ in range(3):  # within the 1 s entry timeout of the dentry m2 has
        assert (m2 / image_pool / "a").read_bytes() == data
    deadline = time.monotonic() + 20
    while True:
        os.stat(m2 / image_pool / "a")
        try:
            os.unlink(a)  # removed elsewhere: m2's fresh dentry must not open the old one
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with pytest.raises(FileNotFoundError):
        (m2 / image_pool / "a").read_bytes()


# The other librbd client of test_image_truncated_while_another_client_holds_its_lock: it
# writes one byte (so it owns the image's exclusive lock), says so, and keeps the image
# open until told to stop.
LOCK_HOLDER = """
import sys, rados, rbd
conf, pool, name = sys.argv[1:]
with rados.Rados(conffile=conf) as cluster, cluster.open_ioctx(pool) as io:
    with rbd.Image(io, name) as image:
        image.write(b"H", 0)
        assert image.is_exclusive_lock_owner()
        print("holding", flush=True)
        sys.stdin.readline()
"""


def test_image_written_after_a_refused_unlink_takes_a_new_descriptors_writes(
        cluster, mnt, image_pool):
    """Found by the long model run (image pool, seed 3): b written through one descriptor;
    unlink(b) refused with EBUSY (the second mount had it open); b written again through
    that descriptor; open(b, O_TRUNC) and a write through the new one -> its write-back
    failed with EINVAL from librbd, and from then on every write, fsync, close and unlink
    of b did (`ImageBackend._aio returned EINVAL (331 bytes at 0)`), and b's image could
    not be removed any more.

    The refused unlink had dropped the image's backend while the cached file kept using
    it: the new descriptor got a second one, a second librbd handle of the same image.
    Its truncate was proxied to the first (which held the exclusive lock), and its own
    view of the size stayed 0, to which librbd clips every write. EBUSY from a snapshot
    here (deterministic, the same path in radosfs)."""
    path = mnt / image_pool / "b"
    fd1 = create(path)
    fd2 = None
    try:
        os.pwrite(fd1, b"1" * 5000, 0)
        os.fsync(fd1)
        run(["rbd", "snap", "create", f"{image_pool}/b@s"], cluster)
        with pytest.raises(OSError) as ei:
            os.unlink(path)
        assert ei.value.errno == errno.EBUSY
        os.pwrite(fd1, b"2" * 885, 0)
        os.fsync(fd1)
        fd2 = os.open(path, os.O_RDWR | os.O_TRUNC)
        os.pwrite(fd2, b"3" * 331, 0)
        os.fsync(fd2)
        os.pwrite(fd2, b"4" * 10, 331)
        assert os.pread(fd1, 1000, 0) == b"3" * 331 + b"4" * 10
    finally:
        errs = [close_quietly(fd) for fd in (fd1, fd2) if fd is not None]
    assert errs == [None, None]
    assert rbd_export(cluster, f"{image_pool}/b") == b"3" * 331 + b"4" * 10
    assert rbd_export(cluster, f"{image_pool}/b@s") == b"1" * 5000
    run(["rbd", "snap", "purge", "--no-progress", f"{image_pool}/b"], cluster)
    os.unlink(path)
    assert run(["rbd", "ls", image_pool], cluster).stdout == b""


def test_image_truncated_while_another_client_holds_its_lock(cluster, mnt, image_pool):
    """The same librbd trap with another client (a VM, `rbd bench`): while it holds the
    image's exclusive lock, a truncate through the mount is carried out by that client,
    and the mount's handle, until refreshed, clipped every later write to the old size:
    EINVAL from its write-back, again at every retry."""
    path = mnt / image_pool / "v"
    path.write_bytes(b"0" * 8192)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(cluster.conf_path), image_pool, "v"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"holding\n"
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, 0)               # resized by the holder, the lock owner
            os.pwrite(fd, b"new" * 100, 0)
            os.fsync(fd)
            os.pwrite(fd, b"more", 300)
        finally:
            err = close_quietly(fd)
        assert err is None
    finally:
        holder.communicate(b"done\n", timeout=60)
    assert holder.returncode == 0
    assert rbd_export(cluster, f"{image_pool}/v") == b"new" * 100 + b"more"
    os.unlink(path)
    assert run(["rbd", "ls", image_pool], cluster).stdout == b""
