"""Real trees round-trip through the mount (issue 10): symlinks, directory metadata, exact
timestamps, with tar, rsync and cp -a; again after a remount and from a pool snapshot.

Each check is made with the real tools (`tar -d`, `rsync -i -c -n`, `diff -r`, `find
-printf`); how things are stored is checked with the `rados` CLI.
"""
from __future__ import annotations

import difflib
import errno
import os
import stat
import time
from pathlib import Path

import pytest

from conftest import fails, healthy, run

FIND = "%P %m %u %g %T@ %y %l\n"
NS = 10 ** 9


def listing(root: Path, mask_write: bool = False, seconds: bool = False) -> list[str]:
    """`find -printf` of a tree (the root itself left out: its name differs); `seconds`:
    times of directories cut to whole seconds."""
    out = run(["find", str(root), "-mindepth", "1", "-printf", FIND]).stdout.decode()
    lines = sorted(out.splitlines())
    if seconds:
        cut = []
        for line in lines:
            f = line.split(" ")
            if f[5] == "d":
                f[4] = f[4].split(".")[0]
            cut.append(" ".join(f))
        lines = cut
    if not mask_write:
        return lines
    masked = []
    for line in lines:
        name, mode, rest = line.split(" ", 2)
        kind = rest.split(" ")[3]
        if kind != "l":
            mode = "%o" % (int(mode, 8) & ~0o222)
        masked.append(f"{name} {mode} {rest}")
    return masked


def make_tree(root: Path) -> Path:
    """A small tree the way source tarballs and /etc look: nested directories of several
    modes and owners, files of several modes, symlinks (relative, absolute, dangling, to a
    directory), times with nanoseconds, before 1970 and past 2106."""
    root.mkdir()
    dirs = {"src": 0o775, "src/lib": 0o755, "src/lib/deep": 0o750, "private": 0o700,
            "private/keys": 0o710, "empty": 0o755, "shared": 0o2775}
    for d in dirs:
        (root / d).mkdir()
    files = {"README": (b"read me\n", 0o644), "src/main.c": (b"int main(){}\n", 0o644),
             "src/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
             "src/lib/deep/x.h": (b"#define X 1\n", 0o600),
             "private/keys/k.pem": (b"-----KEY-----\n", 0o640),
             "shared/notes": (os.urandom(70000), 0o664), "empty-file": (b"", 0o644)}
    for f, (data, mode) in files.items():
        (root / f).write_bytes(data)
        os.chmod(root / f, mode)
    links = {"link-rel": "src/main.c", "link-abs": "/etc/hostname", "dangling": "nowhere/x",
             "src/lib/up": "../../README", "to-dir": "src/lib", "long": "a/" * 300 + "b"}
    for name, target in links.items():
        os.symlink(target, root / name)
    os.chown(root / "private/keys", 1234, 5678)
    os.chown(root / "private/keys/k.pem", 1234, 5678)
    os.lchown(root / "link-rel", 42, 43)
    stamps = [1_234_567_890_123_456_789, 1_600_000_000_000_000_001, 946_684_800 * NS,
              -315_619_200 * NS + 5, 5_000_000_000 * NS + 999_999_999, 17]
    for i, f in enumerate(sorted(files) + sorted(links)):
        t = stamps[i % len(stamps)]
        os.utime(root / f, ns=(t, t), follow_symlinks=False)
    for i, d in enumerate(sorted(dirs, reverse=True)):  # deepest first, as tar does
        t = stamps[(i + 2) % len(stamps)]
        os.chmod(root / d, dirs[d])
        os.utime(root / d, ns=(t, t))
    return root


@pytest.fixture
def m(mnt):
    yield from healthy(mnt)


@pytest.fixture
def source(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def test_tar_x_and_d(m, pool, source, tmp_path, rados):
    tarball = tmp_path / "t.tar"
    run(["tar", "--format=posix", "-C", str(source), "-cf", str(tarball), "."])
    dst = m / pool / "tar"
    dst.mkdir()
    started = time.monotonic()
    run(["tar", "-C", str(dst), "-xpf", str(tarball)])
    took = time.monotonic() - started
    res = run(["tar", "-C", str(dst), "-df", str(tarball)], check=False)
    assert res.returncode == 0 and res.stdout == b"", res.stdout.decode() + res.stderr.decode()
    assert listing(dst) == listing(source)
    print(f"tar -x of {len(listing(source))} entries took {took:.2f}s")
    # How it is stored, as other tools see it.
    assert rados(pool, "get", "tar/link-rel", "-") == b"src/main.c"
    assert rados(pool, "getxattr", "tar/link-rel", "radosfs.symlink") == b"1"
    attrs = rados(pool, "getxattr", "tar/private/", "radosfs.attrs").decode()
    assert "mode=0700" in attrs and "mtime=" in attrs
    attrs = rados(pool, "getxattr", "tar/src/lib/deep/x.h", "radosfs.attrs").decode()
    assert "mode=0600" in attrs


def test_rsync_real_tree(m, pool, tmp_path):
    """/etc/ssl (hundreds of symlinks, a 0710 root:ssl-cert private/) and a slice of
    /usr/share/doc."""
    src = tmp_path / "real"
    src.mkdir()
    run(["cp", "-a", "/etc/ssl", str(src / "ssl")])
    docs = sorted(Path("/usr/share/doc").iterdir())[:60]
    (src / "doc").mkdir()
    run(["cp", "-a", *map(str, docs), str(src / "doc")])
    dst = m / pool / "rsync"
    started = time.monotonic()
    run(["rsync", "-a", f"{src}/", f"{dst}/"])
    took = time.monotonic() - started
    again = run(["rsync", "-a", "-i", "-c", "-n", f"{src}/", f"{dst}/"]).stdout
    assert again == b"", again.decode()[:3000]
    # rsync itself leaves a directory's time alone when the whole seconds already match
    # (it does so on ext4 too), so directories made within the second may differ in ns.
    got, want = listing(dst, seconds=True), listing(src, seconds=True)
    assert got == want, "\n".join(list(difflib.unified_diff(want, got))[:60])
    n = len(listing(src))
    print(f"rsync -a of {n} entries ({run(['du', '-sh', str(src)]).stdout.decode().split()[0]})"
          f" took {took:.2f}s")


def test_cp_a_remount_and_snapshot(m, pool, source, mount_factory):
    dst = m / pool / "cp"
    run(["cp", "-a", str(source), str(dst)])
    run(["diff", "-r", "--no-dereference", str(source), str(dst)])
    want = listing(source)
    assert listing(dst) == want
    # Another mount (a remount) sees the same.
    other = mount_factory("")
    assert listing(other / pool / "cp") == want
    # A pool snapshot keeps it all (read-only: the write bits are cleared there).
    (m / pool / ".snap" / "s1").mkdir()
    snap = m / pool / ".snap" / "s1" / "cp"
    assert listing(snap, mask_write=True) == [
        line for line in listing(dst, mask_write=True)]
    assert os.readlink(snap / "link-rel") == "src/main.c"
    run(["diff", "-r", "--no-dereference", str(source), str(snap)])
    # Symlinks can be renamed and removed.
    os.rename(dst / "link-rel", dst / "renamed")
    assert os.readlink(dst / "renamed") == "src/main.c"
    os.unlink(dst / "renamed")
    assert not os.path.lexists(dst / "renamed")
    assert os.readlink(snap / "link-rel") == "src/main.c"


def test_exact_timestamps(m, pool, rados, mount_factory):
    d = m / pool
    cases = {"zero": "@0", "old": "1960-01-01 00:00:00 UTC", "big": "@4294967296",
             "frac": "@1700000000.123456789", "neg-frac": "@-1.5"}
    want = {"zero": 0, "old": -315619200 * NS, "big": 4294967296 * NS,
            "frac": 1700000000123456789, "neg-frac": -1500000000}
    for name, when in cases.items():
        run(["touch", "-d", when, str(d / name)])
    far = (1 << 62) * NS  # far outside what a RADOS mtime holds
    os.utime(d / "zero", ns=(far, 0))           # atime far, mtime 0
    for name, ns in want.items():
        assert os.stat(d / name).st_mtime_ns == ns, name
    assert os.stat(d / "zero").st_atime_ns == far
    other = mount_factory("")
    for name, ns in want.items():
        assert os.stat(other / pool / name).st_mtime_ns == ns, name
    # A write moves mtime to now (the record's times no longer hold).
    with open(d / "old", "ab") as f:
        f.write(b"x")
    assert abs(os.stat(d / "old").st_mtime - time.time()) < 5
    # A write by another client (rados put) does too.
    rados(pool, "put", "frac", "/etc/hostname")
    time.sleep(1.2)  # attr_timeout
    assert abs(os.stat(d / "frac").st_mtime - time.time()) < 5


def test_directory_metadata(m, pool, rados, mount_factory):
    d = m / pool
    run(["mkdir", "-m", "700", str(d / "priv")])
    assert stat.S_IMODE(os.stat(d / "priv").st_mode) == 0o700
    tmp = run(["mktemp", "-d", "-p", str(d)]).stdout.decode().strip()
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o700
    os.chmod(d / "priv", 0o750)
    os.chown(d / "priv", 1000, 1001)
    os.utime(d / "priv", ns=(5, 1_000_000_000_123))
    st = os.stat(d / "priv")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (
        0o750, 1000, 1001, 1_000_000_000_123)
    other = mount_factory("")
    st = os.stat(other / pool / "priv")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (
        0o750, 1000, 1001, 1_000_000_000_123)
    # Entries created, renamed and removed move the directory's mtime and ctime.
    for change in (lambda: (d / "priv" / "f").write_bytes(b"1"),
                   lambda: os.rename(d / "priv" / "f", d / "priv" / "g"),
                   lambda: os.unlink(d / "priv" / "g")):
        os.utime(d / "priv", ns=(0, 0))
        change()
        st = os.stat(d / "priv")
        assert abs(st.st_mtime - time.time()) < 5 and abs(st.st_ctime - time.time()) < 5
        assert stat.S_IMODE(st.st_mode) == 0o750
    # The pool directory itself keeps chmod and touch too.
    os.chmod(d, 0o750)
    os.utime(d, ns=(0, 86400 * NS))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750 and os.stat(d).st_mtime_ns == 86400 * NS


def test_unsupported_kinds_errnos(m, pool):
    d = m / pool
    (d / "f").write_bytes(b"x")
    for make in (lambda: os.mkfifo(d / "fifo"),
                 lambda: os.mknod(d / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3)),
                 lambda: os.mknod(d / "sock", 0o600 | stat.S_IFSOCK),
                 lambda: os.link(d / "f", d / "hard")):
        with pytest.raises(OSError) as info:
            make()
        assert info.value.errno == errno.EPERM
    fails(["ln", str(d / "f"), str(d / "h2")], "Operation not permitted")
    os.mknod(d / "reg", 0o600 | stat.S_IFREG)   # a regular file is an ordinary create
    assert stat.S_IMODE(os.stat(d / "reg").st_mode) == 0o600


def test_image_files_metadata(m, image_pool, mount_factory):
    f = m / image_pool / "disk"
    f.write_bytes(b"x" * 4096)
    os.chmod(f, 0o600)
    os.chown(f, 1000, 1000)
    os.utime(f, ns=(0, 1_500_000_000_000_000_007))
    other = mount_factory("")
    for p in (f, other / image_pool / "disk"):
        st = os.stat(p)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (
            0o600, 1000, 1000, 1_500_000_000_000_000_007)
    assert run(["ls", "-l", str(m / image_pool)]).stdout.decode().count("-rw-------") == 1
    assert "user.radosfs.attrs" not in os.listxattr(f)
    # Nothing in an image pool reports success while ignoring the request.
    for change in (lambda: os.chmod(m / image_pool, 0o700),
                   lambda: os.utime(m / image_pool, (0, 0)),
                   lambda: os.symlink("disk", m / image_pool / "l"),
                   lambda: os.mkfifo(m / image_pool / "p")):
        with pytest.raises(OSError) as info:
            change()
        assert info.value.errno == errno.EPERM


def test_atime_choices(mount_factory, pool):
    """noatime (the default): reads never change atime; relatime: the first read after a
    change does, the next one does not; strictatime: every open for reading does."""
    plain, rel, strict = mount_factory(""), mount_factory("relatime"), mount_factory(
        "strictatime")
    f = plain / pool / "f"
    f.write_bytes(b"data")
    os.utime(f, ns=(1000 * NS, 2000 * NS))
    f.read_bytes()
    assert os.stat(f).st_atime_ns == 1000 * NS
    g = rel / pool / "f"
    g.read_bytes()
    first = os.stat(g).st_atime_ns
    assert abs(first / NS - time.time()) < 5
    g.read_bytes()
    assert os.stat(g).st_atime_ns == first
    assert os.stat(g).st_mtime_ns == 2000 * NS     # an atime update keeps mtime
    h = strict / pool / "f"
    h.read_bytes()
    second = os.stat(h).st_atime_ns
    assert second > first
