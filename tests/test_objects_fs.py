"""Object pools through the mount, driven by real programs, checked through the cluster.

Every test works in its own fresh pool (the `pool` fixture), shown as `mnt / pool`; what
the mount did is checked with the `rados`/`ceph` CLIs, never through radosfs itself.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import fails, run

MiB = 1 << 20


# ---- helpers ----------------------------------------------------------------------------

def rand_bytes(n: int, seed: int | None = None) -> bytes:
    return random.Random(seed).randbytes(n) if seed is not None else os.urandom(n)


def rados_ls(rados, pool: str) -> set[str]:
    """The pool's objects, less radosfs's flag object (made when a file gets a mode other
    than the mount's default, e.g. a copy of the 0755 /etc/hostname)."""
    return set(rados(pool, "ls").decode().splitlines()) - {".radosfs-attrs"}


def rados_get(rados, pool: str, oid: str, tmp_path: Path) -> bytes:
    out = tmp_path / ("get-" + uuid.uuid4().hex)
    rados(pool, "get", oid, str(out))
    data = out.read_bytes()
    out.unlink()
    return data


STAT_RE = re.compile(r" mtime (\S+ ?\S*?), size (\d+)\s*$")


def rados_stat(rados, pool: str, oid: str) -> tuple[datetime, int]:
    """(mtime, size) as `rados stat` prints them."""
    text = rados(pool, "stat", oid).decode().strip()
    m = STAT_RE.search(text)
    assert m, f"unexpected rados stat output: {text!r}"
    stamp = m.group(1)
    # e.g. 2021-03-04T05:06:07.000000+0000
    mtime = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
    return mtime, int(m.group(2))


def make_tree(root: Path, nfiles: int = 50, seed: int = 7) -> dict[str, bytes]:
    """A nested tree of files with random sizes up to 300 KiB and whole-second mtimes."""
    rnd = random.Random(seed)
    dirs = ["", "a", "a/b", "a/b/c", "d", "d/e", "f g", "h/i/j/k"]
    files: dict[str, bytes] = {}
    for i in range(nfiles):
        d = dirs[i % len(dirs)]
        rel = f"{d}/file-{i:02d}.bin" if d else f"file-{i:02d}.bin"
        size = rnd.choice([0, 1, 4095, 4096, rnd.randrange(1, 300 * 1024)])
        data = rnd.randbytes(size)
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        t = 1_600_000_000 + i * 3600
        os.utime(p, (t, t))
        files[rel] = data
    for d in dirs:
        if d:
            (root / d).chmod(0o755)
    return files


# ---- data -------------------------------------------------------------------------------

def test_cp_5mib_reads_back_with_rados_get(mnt, pool, rados, tmp_path):
    data = rand_bytes(5 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    run(["cp", str(src), str(mnt / pool / "big.bin")])
    assert "big.bin" in rados_ls(rados, pool)
    assert rados_stat(rados, pool, "big.bin")[1] == len(data)
    assert rados_get(rados, pool, "big.bin", tmp_path) == data
    # and back through the mount
    out = run(["sha256sum", str(mnt / pool / "big.bin")]).stdout.decode().split()[0]
    assert out == hashlib.sha256(data).hexdigest()


def test_rados_put_shows_as_file(mnt, pool, rados, tmp_path):
    data = rand_bytes(123_457)
    src = tmp_path / "put.bin"
    src.write_bytes(data)
    rados(pool, "put", "put.bin", str(src))
    size = run(["stat", "-c", "%s", str(mnt / pool / "put.bin")]).stdout.decode().strip()
    assert int(size) == len(data)
    run(["cmp", str(src), str(mnt / pool / "put.bin")])
    listing = run(["ls", "-l", str(mnt / pool)]).stdout.decode()
    assert re.search(rf"\s{len(data)}\s.*put\.bin$", listing, re.M), listing


def test_lookups_after_a_plain_file_still_find_every_kind(mount_factory, pool, rados,
                                                          tmp_path):
    """After a lookup found a plain file, the next asks for the plain object first and the
    directory marker and striped head only when it is missing: every kind must still be
    found, in any order, and a plain file costs two RADOS operations (stat + first read)."""
    src = tmp_path / "data"
    src.write_bytes(b"striped or not\n")
    for name in ("a", "b", "c", "d/x"):
        rados(pool, "put", name, str(src))
    rados(pool, "--striper", "put", "s", str(src))
    rados(pool, "put", "e/", "/dev/null")          # a marker with nothing under it
    m = mount_factory("")
    try:
        def ops() -> int:
            return m.stats()["rados"]["aio_ops"]
        kinds = {}
        for name in ("a", "d", "b", "s", "c", "e", "a2", "d", "s", "b"):
            try:
                kinds.setdefault(name, set()).add(
                    "dir" if (m.path / pool / name).is_dir() else
                    str((m.path / pool / name).stat().st_size))
            except FileNotFoundError:
                kinds.setdefault(name, set()).add("missing")
        assert kinds == {"a": {"15"}, "b": {"15"}, "c": {"15"}, "s": {"15"}, "d": {"dir"},
                         "e": {"dir"}, "a2": {"missing"}}, kinds
        rados(pool, "put", "f", str(src))
        rados(pool, "put", "g", str(src))
        assert (m.path / pool / "g").read_bytes() == src.read_bytes()  # a plain file last
        before = ops()
        assert (m.path / pool / "f").read_bytes() == src.read_bytes()
        assert ops() - before == 2, "a plain file after a plain file: stat + read, no more"
    finally:
        m.close()


def test_cp_over_a_longer_file_shrinks_it(mnt, pool, rados, tmp_path):
    (tmp_path / "long").write_bytes(rand_bytes(1_200_000))
    rados(pool, "put", "obj", str(tmp_path / "long"))
    run(["cmp", str(tmp_path / "long"), str(mnt / pool / "obj")])
    short = rand_bytes(5000)
    (tmp_path / "short").write_bytes(short)
    run(["cp", str(tmp_path / "short"), str(mnt / pool / "obj")])
    assert rados_stat(rados, pool, "obj")[1] == len(short)
    assert rados_get(rados, pool, "obj", tmp_path) == short
    run(["cmp", str(tmp_path / "short"), str(mnt / pool / "obj")])


def test_names_with_spaces_unicode_and_dashes(mnt, pool, rados, tmp_path):
    names = ["with space.txt", "ünïcödé ☃.txt", "-dash", "dir with space/inner file"]
    run(["mkdir", str(mnt / pool / "dir with space")])
    for n in names:
        run(["cp", "/etc/hostname", str(mnt / pool / n)])
    got = rados_ls(rados, pool)
    assert set(names) <= got, got
    assert sorted(os.listdir(mnt / pool)) == sorted(["with space.txt", "ünïcödé ☃.txt",
                                                      "-dash", "dir with space"])
    # RADOS object names are UTF-8: other bytes are refused, nothing is created
    with pytest.raises(OSError) as ei:
        open(os.path.join(os.fsencode(mnt / pool), b"bad\xff"), "wb")
    assert ei.value.errno == errno.EINVAL
    assert len(rados_ls(rados, pool)) == len(got)


def test_rados_put_replaced_is_seen(mnt, pool, rados, tmp_path):
    """An object rewritten in the cluster after it was read through the mount."""
    p = mnt / pool / "changing"
    first, second = rand_bytes(300_000), rand_bytes(200_000)
    (tmp_path / "1").write_bytes(first)
    (tmp_path / "2").write_bytes(second)
    rados(pool, "put", "changing", str(tmp_path / "1"))
    run(["cmp", str(tmp_path / "1"), str(p)])
    rados(pool, "put", "changing", str(tmp_path / "2"))
    # attr_timeout is 1s: after that the new size and content must show
    time.sleep(1.5)
    run(["cmp", str(tmp_path / "2"), str(p)])


def test_dd_notrunc_changes_only_those_bytes(mnt, pool, rados, tmp_path):
    ref = bytearray(rand_bytes(3 * MiB + 12345))
    src = tmp_path / "ref.bin"
    src.write_bytes(ref)
    target = mnt / pool / "patched.bin"
    run(["cp", str(src), str(target)])
    patch = rand_bytes(70_001)
    (tmp_path / "patch.bin").write_bytes(patch)
    off = MiB - 1000  # straddles a 1 MiB page boundary
    run(["dd", f"if={tmp_path / 'patch.bin'}", f"of={target}", "bs=4096",
         f"seek={off}", "oflag=seek_bytes", "conv=notrunc", "status=none"])
    ref[off:off + len(patch)] = patch
    got = rados_get(rados, pool, "patched.bin", tmp_path)
    assert len(got) == len(ref)
    assert got == bytes(ref)
    # a second, small patch past the first one (not page aligned either)
    run(["dd", f"if={tmp_path / 'patch.bin'}", f"of={target}", "bs=1", "count=7",
         "seek=2999999", "conv=notrunc", "status=none"])
    ref[2999999:2999999 + 7] = patch[:7]
    assert rados_get(rados, pool, "patched.bin", tmp_path) == bytes(ref)
    run(["cmp", str(target), "-"], input=bytes(ref))


def test_append(mnt, pool, rados, tmp_path):
    p = mnt / pool / "log.txt"
    run(f"printf 'line one\\n' > '{p}'")
    run(f"printf 'line two\\n' >> '{p}'")
    big = rand_bytes(2 * MiB + 3)
    (tmp_path / "big").write_bytes(big)
    run(f"cat '{tmp_path / 'big'}' >> '{p}'")
    want = b"line one\nline two\n" + big
    assert rados_get(rados, pool, "log.txt", tmp_path) == want
    assert rados_stat(rados, pool, "log.txt")[1] == len(want)


def test_truncate_grow_and_shrink(mnt, pool, rados, tmp_path):
    data = rand_bytes(1_500_000)
    (tmp_path / "d").write_bytes(data)
    p = mnt / pool / "t.bin"
    run(["cp", str(tmp_path / "d"), str(p)])
    run(["cat", str(p)])  # have it cached
    run(["truncate", "-s", "3M", str(p)])
    assert rados_stat(rados, pool, "t.bin")[1] == 3 * MiB
    want = data + bytes(3 * MiB - len(data))
    assert rados_get(rados, pool, "t.bin", tmp_path) == want
    run(["cmp", str(p), "-"], input=want)
    run(["truncate", "-s", "1000", str(p)])
    assert rados_stat(rados, pool, "t.bin")[1] == 1000
    assert rados_get(rados, pool, "t.bin", tmp_path) == data[:1000]
    assert run(["stat", "-c", "%s", str(p)]).stdout.decode().strip() == "1000"
    run(["cmp", str(p), "-"], input=data[:1000])
    # grow again: the cut-off bytes must not come back
    run(["truncate", "-s", "2000", str(p)])
    want = data[:1000] + bytes(1000)
    assert rados_get(rados, pool, "t.bin", tmp_path) == want
    run(["cmp", str(p), "-"], input=want)
    run(["truncate", "-s", "0", str(p)])
    assert rados_stat(rados, pool, "t.bin")[1] == 0


# ---- names and directories --------------------------------------------------------------

def test_mkdir_p_and_copy_into_it(mnt, pool, rados, tmp_path):
    data = rand_bytes(10_000)
    (tmp_path / "x").write_bytes(data)
    base = mnt / pool
    # an object put with '/' in its name (before the mount looks at the pool)
    rados(pool, "put", "x/y/z.txt", str(tmp_path / "x"))
    run(["mkdir", "-p", str(base / "a/b/c")])
    run(["cp", str(tmp_path / "x"), str(base / "a/b/c/file.bin")])
    assert run(["ls", str(base / "a/b/c")]).stdout.decode().split() == ["file.bin"]
    assert run(["ls", str(base)]).stdout.decode().split() == ["a", "x"]
    assert run(["ls", str(base / "a")]).stdout.decode().split() == ["b"]
    names = rados_ls(rados, pool)
    assert "a/b/c/file.bin" in names
    assert names - {"x/y/z.txt"} <= {"a/", "a/b/", "a/b/c/", "a/b/c/file.bin"}, names
    assert rados_get(rados, pool, "a/b/c/file.bin", tmp_path) == data
    # objects put with '/' in their names show up as subdirectories
    assert (base / "x").is_dir() and (base / "x/y").is_dir()
    run(["cmp", str(tmp_path / "x"), str(base / "x/y/z.txt")])


def test_empty_dir_survives_remount_and_rmdir_removes_marker(mnt, mount_factory, pool, rados):
    run(["mkdir", str(mnt / pool / "empty")])
    run(["mkdir", "-p", str(mnt / pool / "outer/inner")])
    names = rados_ls(rados, pool)
    assert "empty/" in names and "outer/inner/" in names, names
    m2 = mount_factory("")
    assert (m2 / pool / "empty").is_dir()
    assert (m2 / pool / "outer/inner").is_dir()
    assert sorted(run(["ls", str(m2 / pool)]).stdout.decode().split()) == ["empty", "outer"]
    assert run(["ls", "-A", str(m2 / pool / "empty")]).stdout.decode() == ""
    run(["rmdir", str(m2 / pool / "empty")])
    assert "empty/" not in rados_ls(rados, pool)
    run(["rmdir", str(m2 / pool / "outer/inner")])
    assert "outer/inner/" not in rados_ls(rados, pool)
    assert not (m2 / pool / "empty").exists()


def test_rmdir_not_empty(mnt, pool, rados, tmp_path):
    # a directory that exists only through an object name ('/' in it), put before the
    # mount looks at the pool
    rados(pool, "put", "implicit/obj", "/etc/hostname")
    d = mnt / pool / "full"
    run(["mkdir", str(d)])
    run(f"echo hi > '{d}/x'")
    fails(["rmdir", str(d)], "Directory not empty")
    with pytest.raises(OSError) as ei:
        os.rmdir(d)
    assert ei.value.errno == errno.ENOTEMPTY
    assert {"full/", "full/x"} <= rados_ls(rados, pool)
    with pytest.raises(OSError) as ei:
        os.rmdir(mnt / pool / "implicit")
    assert ei.value.errno == errno.ENOTEMPTY
    assert "implicit/obj" in rados_ls(rados, pool)


def test_rm(mnt, pool, rados, tmp_path):
    (tmp_path / "x").write_bytes(b"to be removed\n")
    rados(pool, "put", "gone", str(tmp_path / "x"))
    rados(pool, "put", "kept", str(tmp_path / "x"))
    run(["rm", str(mnt / pool / "gone")])
    assert rados_ls(rados, pool) == {"kept"}
    assert not (mnt / pool / "gone").exists()
    assert run(["ls", str(mnt / pool)]).stdout.decode().split() == ["kept"]
    fails(["rm", str(mnt / pool / "gone")], "No such file or directory")


def test_mv_within_pool_keeps_data_and_xattrs(mnt, pool, rados, tmp_path):
    data = rand_bytes(2 * MiB + 77)
    (tmp_path / "x").write_bytes(data)
    src, dst = mnt / pool / "old.bin", mnt / pool / "sub/new.bin"
    run(["cp", str(tmp_path / "x"), str(src)])
    run(["setfattr", "-n", "user.color", "-v", "blue", str(src)])
    rados(pool, "setxattr", "old.bin", "owner", "alice")
    run(["mkdir", str(mnt / pool / "sub")])
    run(["mv", str(src), str(dst)])
    names = rados_ls(rados, pool)
    assert "old.bin" not in names
    assert "sub/new.bin" in names
    assert rados_get(rados, pool, "sub/new.bin", tmp_path) == data
    assert rados(pool, "getxattr", "sub/new.bin", "color") == b"blue"
    assert rados(pool, "getxattr", "sub/new.bin", "owner") == b"alice"
    assert not src.exists()
    run(["cmp", str(tmp_path / "x"), str(dst)])
    # mv over an existing file replaces it (data and xattrs)
    (tmp_path / "y").write_bytes(b"small\n")
    rados(pool, "put", "other", str(tmp_path / "y"))
    rados(pool, "setxattr", "other", "stale", "1")
    run(["mv", str(mnt / pool / "other"), str(dst)])
    assert rados_get(rados, pool, "sub/new.bin", tmp_path) == b"small\n"
    xattrs = set(rados(pool, "listxattr", "sub/new.bin").decode().split())
    assert xattrs == {"stale"}, xattrs
    assert "other" not in rados_ls(rados, pool)
    # and the mount shows the new content, not what it had cached of the old target
    run(["cmp", str(tmp_path / "y"), str(dst)])


def test_mv_empty_file(mnt, pool, rados, tmp_path):
    run(["touch", str(mnt / pool / "empty")])
    run(["mv", str(mnt / pool / "empty"), str(mnt / pool / "still-empty")])
    assert rados_ls(rados, pool) == {"still-empty"}
    assert rados_stat(rados, pool, "still-empty")[1] == 0


def test_mv_directory(mnt, pool, rados, tmp_path):
    base = mnt / pool
    run(["mkdir", "-p", str(base / "d/sub"), str(base / "d/emptysub")])
    files = {"d/one": rand_bytes(1000), "d/sub/two": rand_bytes(300_000)}
    for rel, data in files.items():
        (tmp_path / "f").write_bytes(data)
        run(["cp", str(tmp_path / "f"), str(base / rel)])
    run(["mv", str(base / "d"), str(base / "e")])
    names = rados_ls(rados, pool)
    assert not [n for n in names if n.startswith("d/")], names
    for rel, data in files.items():
        new = "e/" + rel[2:]
        assert new in names
        assert rados_get(rados, pool, new, tmp_path) == data
    assert "e/emptysub/" in names
    assert not (base / "d").exists()
    assert sorted(os.listdir(base / "e")) == ["emptysub", "one", "sub"]


def test_mv_directory_of_rados_objects(mnt, pool, rados, tmp_path):
    """A directory that exists only as '/' in object names (no marker objects)."""
    (tmp_path / "f").write_bytes(b"payload\n")
    for oid in ("src/a", "src/b", "src/deep/c"):
        rados(pool, "put", oid, str(tmp_path / "f"))
    run(["mv", str(mnt / pool / "src"), str(mnt / pool / "dst")])
    names = rados_ls(rados, pool)
    assert {"dst/a", "dst/b", "dst/deep/c"} <= names, names
    assert not [n for n in names if n.startswith("src/")], names


def test_xattrs_both_ways(mnt, pool, rados, tmp_path):
    p = mnt / pool / "xa"
    run(["sh", "-c", f"umask 022; cat /etc/hostname > {p}"])  # default mode: no radosfs.attrs
    run(["setfattr", "-n", "user.k1", "-v", "value one", str(p)])
    assert rados(pool, "getxattr", "xa", "k1") == b"value one"
    rados(pool, "setxattr", "xa", "k2", "from-rados")
    out = run(["getfattr", "--only-values", "-n", "user.k2", str(p)]).stdout
    assert out == b"from-rados"
    assert set(rados(pool, "listxattr", "xa").decode().split()) == {"k1", "k2"}
    dump = run(["getfattr", "-d", str(p)]).stdout.decode()
    assert 'user.k1="value one"' in dump and 'user.k2="from-rados"' in dump, dump
    # binary value
    run(["setfattr", "-n", "user.bin", "-v", "0x00ff10", str(p)])
    assert rados(pool, "getxattr", "xa", "bin") == b"\x00\xff\x10"
    run(["setfattr", "-x", "user.k1", str(p)])
    assert set(rados(pool, "listxattr", "xa").decode().split()) == {"k2", "bin"}
    fails(["getfattr", "-n", "user.k1", str(p)], "No such attribute")
    fails(["setfattr", "-x", "user.nope", str(p)], "No such attribute")
    # removed in the cluster: gone through the mount
    rados(pool, "rmxattr", "xa", "k2")
    fails(["getfattr", "-n", "user.k2", str(p)], "No such attribute")
    # data unchanged by all this
    run(["cmp", "/etc/hostname", str(p)])


# ---- whole trees ------------------------------------------------------------------------

def check_rsync_copy(rados, pool: str, src: Path, dst: Path, files: dict[str, bytes],
                     tmp_path: Path, flags: list[str]) -> None:
    run(["diff", "-r", str(src), str(dst)])
    names = rados_ls(rados, pool)
    for rel in files:
        assert "tree/" + rel in names
    for rel in random.Random(1).sample(sorted(files), 8):
        assert rados_get(rados, pool, "tree/" + rel, tmp_path) == files[rel]
    # no rsync temp files left behind
    assert not [n for n in names if "/." in n or n.startswith(".")], names
    # file mtimes were kept (whole seconds: that is what RADOS stores)
    for rel in list(files)[:5]:
        assert os.stat(dst / rel).st_mtime == os.stat(src / rel).st_mtime
    # a second run: exit 0 and no file transferred again
    res = run(["rsync", *flags, "--itemize-changes", f"{src}/", f"{dst}/"], timeout=120)
    changed = [line for line in res.stdout.decode().splitlines()
               if line[:2] in (">f", "cf", "<f") or line.startswith("*deleting")]
    assert changed == [], changed
    # sha256sum of the copy agrees with the source
    manifest = run(["sha256sum", *sorted(files)], cwd=src).stdout
    run(["sha256sum", "--quiet", "-c", "-"], input=manifest, cwd=dst)


def test_rsync_a_tree_then_diff_and_second_run_clean(mnt, pool, rados, tmp_path):
    """`rsync -a`: the mode of the source files (0644) is what the mount shows anyway."""
    src = tmp_path / "src"
    files = make_tree(src)
    dst = mnt / pool / "tree"
    run(["rsync", "-a", f"{src}/", f"{dst}/"], timeout=120)
    check_rsync_copy(rados, pool, src, dst, files, tmp_path, ["-a"])


def test_rsync_rlt_tree_then_diff_and_second_run_clean(mnt, pool, rados, tmp_path):
    """The same without -p/-o/-g (rsync -a minus permissions and owners)."""
    src = tmp_path / "src"
    files = make_tree(src, seed=8)
    dst = mnt / pool / "tree"
    run(["rsync", "-rlt", f"{src}/", f"{dst}/"], timeout=120)
    check_rsync_copy(rados, pool, src, dst, files, tmp_path, ["-rlt"])


def test_rm_r_of_directory_made_by_object_names(mnt, pool, rados, tmp_path):
    """`rm -r` of a directory that exists only as '/' in object names (no marker object),
    when removing its files takes longer than the mount trusts its directory index (2 s):
    each unlink is slowed down with strace's delay injection (or done slowly by hand)."""
    (tmp_path / "f").write_bytes(b"payload\n")
    for i in range(4):
        rados(pool, "put", f"imp/sub/f{i}", str(tmp_path / "f"))
    rados(pool, "put", "keep", str(tmp_path / "f"))
    target = mnt / pool / "imp"
    assert sorted(os.listdir(target / "sub")) == ["f0", "f1", "f2", "f3"]
    if shutil.which("strace"):
        res = run(["strace", "-f", "-o", "/dev/null", "-e", "inject=unlinkat:delay_exit=700000",
                   "rm", "-r", str(target)], check=False, timeout=60)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
    else:  # what rm -r does, slowly
        for name in os.listdir(target / "sub"):
            os.unlink(target / "sub" / name)
            time.sleep(0.7)
        os.rmdir(target / "sub")
        os.rmdir(target)
    assert rados_ls(rados, pool) == {"keep"}
    assert not target.exists()


def test_tar_out_of_and_into_the_mount(mnt, pool, rados, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, nfiles=30, seed=11)
    # into the mount
    dst = mnt / pool / "untar"
    run(["mkdir", str(dst)])
    run(f"tar c -C '{src}' . | tar x -C '{dst}'", timeout=120)
    run(["diff", "-r", str(src), str(dst)])
    names = rados_ls(rados, pool)
    for rel, data in files.items():
        assert "untar/" + rel in names
    for rel in sorted(files)[:5]:
        assert rados_get(rados, pool, "untar/" + rel, tmp_path) == files[rel]
    # out of the mount
    out = tmp_path / "out"
    out.mkdir()
    run(f"tar c -C '{dst}' . | tar x -C '{out}'", timeout=120)
    run(["diff", "-r", str(src), str(out)])
    listing = run(["tar", "tvf", "-"], input=run(["tar", "c", "-C", str(dst), "."]).stdout)
    assert listing.returncode == 0
    manifest = run(["sha256sum", *sorted(files)], cwd=src).stdout
    assert run(["sha256sum", *sorted(files)], cwd=dst).stdout == manifest
    assert run(["sha256sum", *sorted(files)], cwd=out).stdout == manifest


# ---- metadata ---------------------------------------------------------------------------

def test_touch_d_sets_rados_mtime(mnt, pool, rados, tmp_path):
    p = mnt / pool / "stamped"
    run(["cp", "/etc/hostname", str(p)])
    run(["touch", "-d", "2021-03-04 05:06:07 UTC", str(p)])
    mtime, size = rados_stat(rados, pool, "stamped")
    assert mtime == datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert size == len(Path("/etc/hostname").read_bytes())
    assert run(["stat", "-c", "%Y", str(p)]).stdout.decode().strip() == "1614834367"
    # data unchanged
    run(["cmp", "/etc/hostname", str(p)])
    # touch of a new file creates an empty object
    run(["touch", "-d", "@1500000000", str(mnt / pool / "new")])
    mtime, size = rados_stat(rados, pool, "new")
    assert size == 0
    assert mtime.timestamp() == 1500000000


def test_touch_d_right_after_a_write(mnt, pool, rados, tmp_path):
    """Write then set the mtime: the later write-back must not move the mtime again."""
    p = mnt / pool / "w"
    run(f"printf data > '{p}' && touch -d @1400000000 '{p}'")
    mtime, size = rados_stat(rados, pool, "w")
    assert size == 4
    assert mtime.timestamp() == 1400000000


def test_df_shows_cluster_size(mnt, cluster):
    out = run(["df", "-B1", "--output=size,avail", str(mnt.path)]).stdout.decode().split()
    size, avail = int(out[2]), int(out[3])
    stats = json.loads(cluster.ceph("df", "-f", "json"))["stats"]
    total = stats["total_bytes"]
    assert abs(size - total) <= total * 0.10, (size, total)
    assert abs(avail - stats["total_avail_bytes"]) <= total * 0.10, (avail, stats)
    assert 0 < avail <= size


# ---- errors -----------------------------------------------------------------------------

def test_enoent_for_missing_file(mnt, pool):
    p = mnt / pool / "missing"
    fails(["cat", str(p)], "No such file or directory")
    fails(["stat", str(p)], "No such file or directory")
    with pytest.raises(FileNotFoundError):
        os.stat(p)
    fails(["cat", str(mnt / "no-such-pool-here" / "x")], "No such file or directory")


def test_eexist_for_mkdir_of_existing(mnt, pool, rados):
    d = mnt / pool / "dir"
    run(["mkdir", str(d)])
    fails(["mkdir", str(d)], "File exists")
    run(f"echo x > '{mnt / pool / 'afile'}'")
    fails(["mkdir", str(mnt / pool / "afile")], "File exists")
    with pytest.raises(FileExistsError):
        os.mkdir(d)
    fails(["mkdir", str(mnt / pool)], "File exists")  # a pool at the root
    assert rados_ls(rados, pool) == {"dir/", "afile"}


def test_enotdir_and_eisdir(mnt, pool, rados):
    run(["mkdir", str(mnt / pool / "d")])
    run(["cp", "/etc/hostname", str(mnt / pool / "f")])
    fails(["rmdir", str(mnt / pool / "f")], "Not a directory")
    fails(["rm", str(mnt / pool / "d")], "Is a directory")
    fails(["cat", str(mnt / pool / "f" / "x")], "Not a directory")
    fails(["cp", "/etc/hostname", str(mnt / pool / "f" / "x")], "Not a directory")
    assert rados_ls(rados, pool) == {"d/", "f"}


def test_enametoolong(mnt, pool, rados):
    name = "n" * 300
    fails(["touch", str(mnt / pool / name)], "File name too long")
    fails(["mkdir", str(mnt / pool / name)], "File name too long")
    with pytest.raises(OSError) as ei:
        open(mnt / pool / name, "w")
    assert ei.value.errno == errno.ENAMETOOLONG
    assert rados_ls(rados, pool) == set()
    # exactly 255 bytes is fine
    ok = "k" * 255
    run(["touch", str(mnt / pool / ok)])
    assert rados_ls(rados, pool) == {ok}


def test_mkdir_at_root_creates_pool_rmdir_needs_allow_pool_delete(mnt, mount_factory, cluster):
    name = "fs-" + uuid.uuid4().hex[:8]
    try:
        run(["mkdir", str(mnt / name)])
        pools = cluster.ceph("osd", "pool", "ls").split()
        assert name in pools
        apps = json.loads(cluster.ceph("osd", "pool", "application", "get", name, "-f", "json"))
        assert "radosfs" in apps, apps
        # it is usable at once
        run(f"echo hello > '{mnt / name / 'f'}'")
        run(["rados", "-p", name, "stat", "f"], cluster)
        run(["rm", str(mnt / name / "f")])
        fails(["rmdir", str(mnt / name)], "Operation not permitted")
        assert name in cluster.ceph("osd", "pool", "ls").split()
        m2 = mount_factory("allow_pool_delete")
        # not empty: refused
        run(["rados", "-p", name, "put", "obj", "/etc/hostname"], cluster)
        fails(["rmdir", str(m2 / name)], "Directory not empty")
        run(["rados", "-p", name, "rm", "obj"], cluster)
        run(["rmdir", str(m2 / name)])
        assert name not in cluster.ceph("osd", "pool", "ls").split()
        assert not (m2 / name).exists()
    finally:
        if name in cluster.ceph("osd", "pool", "ls").split():
            cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def test_inodes_the_kernel_forgets_leave_the_daemon(mnt, pool, rados, tmp_path):
    """forget works: once the kernel drops its dentries and inodes (drop_caches), the
    daemon's inode table no longer holds the files it was shown, and the names still
    resolve (a new lookup) with the right contents."""
    d = mnt / pool
    for i in range(60):
        (d / f"f{i:02d}").write_bytes(b"%d" % i)
    assert len(os.listdir(d)) == 60

    def known() -> int:
        return mnt.stats()["inodes"]["known"]
    held = known()
    assert held >= 60
    deadline = time.monotonic() + 30
    while known() > held - 60 and time.monotonic() < deadline:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        time.sleep(0.5)
    assert known() <= held - 60
    assert sorted(os.listdir(d)) == [f"f{i:02d}" for i in range(60)]
    assert (d / "f42").read_bytes() == b"42"
    assert rados_get(rados, pool, "f42", tmp_path) == b"42"


def test_a_name_made_elsewhere_shows_at_once_or_after_negative_timeout(
        mnt, mount_factory, pool, rados, tmp_path):
    """By default a missing name is always asked of the cluster: an object another client
    makes can be opened at once. With negative_timeout=1 a lookup may answer "no such
    file" from a listing younger than that (docs/semantics.md), never from an older one."""
    src = tmp_path / "y"
    src.write_bytes(b"made elsewhere")
    d = mnt / pool / "d"
    d.mkdir()
    assert not (d / "y").exists()
    rados(pool, "put", "d/y", str(src))
    assert (d / "y").read_bytes() == b"made elsewhere"

    m = mount_factory("negative_timeout=1")
    e = m / pool / "e"
    e.mkdir()
    assert not (e / "y").exists()
    rados(pool, "put", "e/y", str(src))
    time.sleep(1.5)
    assert (e / "y").read_bytes() == b"made elsewhere"
    assert sorted(os.listdir(e)) == ["y"]
