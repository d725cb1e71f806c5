"""The mount command itself: its errors, mount(8)/umount(8), signals, `ro`, the stats file.

Everything runs the real command in a subprocess; results are checked with /proc/mounts,
the process table and the `rados` CLI.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, env_with_repo, run

MiB = 1 << 20
FAIL_WITHIN = 15.0


# ---- helpers ----------------------------------------------------------------------------

def mounted(path: Path) -> int:
    """How many /proc/mounts entries have this mountpoint."""
    want = str(path)
    n = 0
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mp = fields[1].encode().decode("unicode_escape")  # \040 etc.
        if mp == want:
            n += 1
    return n


def mount_type(path: Path) -> str | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(path):
            return fields[2]
    return None


def daemon_pids(path: Path) -> list[int]:
    """Processes whose command line names this (unique) mountpoint."""
    res = subprocess.run(["pgrep", "-f", f"radosfs.mount .*{path}( |$)"],
                         capture_output=True, text=True)
    return [int(p) for p in res.stdout.split() if int(p) != os.getpid()]


def mount_cmd(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "radosfs.mount", *args], capture_output=True,
                         text=True, timeout=timeout, cwd=REPO, env=env_with_repo())
    return res, time.monotonic() - t0


def check_failed(res: subprocess.CompletedProcess, took: float, mountpoint: Path,
                 *words: str) -> str:
    """A mount that had to fail: exit code, time, one clean line naming the cause."""
    err = res.stderr.strip()
    assert res.returncode != 0, f"mount succeeded: {res.stdout} {res.stderr}"
    assert took < FAIL_WITHIN, f"took {took:.1f}s to fail"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{err}"
    assert err.startswith("mount.radosfs: "), err
    low = err.lower()
    for w in words:
        assert w.lower() in low, f"{w!r} not in {err!r}"
    assert mounted(mountpoint) == 0, f"{mountpoint} left mounted"
    # no daemon left behind either
    deadline = time.monotonic() + 5
    while daemon_pids(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon_pids(mountpoint) == [], "a mount daemon is still running"
    return err


def unmount(path: Path) -> None:
    """Unmount if mounted (also lazily as a last resort) and wait for the daemon to exit."""
    if mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=120)
        deadline = time.monotonic() + 30
        while mounted(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        if mounted(path):
            subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)
    deadline = time.monotonic() + 30
    while daemon_pids(path) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def direct_mount(cluster, path: Path, options: str = ""):
    """Mount with the command (not the fixture); always unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    log = path.with_name(path.name + "-daemon.log")
    opts = f"conf={cluster.conf_path}" + (f",{options}" if options else "")
    try:
        res, _ = mount_cmd("none", str(path), "-o", opts, "--log", str(log))
        assert res.returncode == 0, f"mount failed: {res.stderr}"
        assert mounted(path) == 1
        yield log
    finally:
        unmount(path)


def rados_get(cluster, pool: str, oid: str, tmp: Path) -> bytes:
    out = tmp / f"got-{time.monotonic_ns()}"
    run(["rados", "-p", pool, "get", oid, str(out)], cluster)
    data = out.read_bytes()
    out.unlink()
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mp(tmp_path) -> Path:
    p = tmp_path / "mp"
    p.mkdir()
    return p


# ---- errors -----------------------------------------------------------------------------

def test_bad_conf_path(mp, tmp_path):
    bad = tmp_path / "nowhere" / "ceph.conf"
    res, took = mount_cmd("none", str(mp), "-o", f"conf={bad}")
    check_failed(res, took, mp, str(bad), "not found")


def test_unreachable_cluster(cluster, mp, tmp_path):
    port = free_port()
    conf = tmp_path / "unreachable.conf"
    conf.write_text(f"""[global]
mon host = 127.0.0.1:{port}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx

[client]
keyring = {cluster.keyring_path}
""")
    res, took = mount_cmd("none", str(mp), "-o", f"conf={conf},connect_timeout=3")
    err = check_failed(res, took, mp)
    assert took >= 2, f"gave up after {took:.1f}s, before connect_timeout=3"
    assert any(w in err.lower() for w in ("did not answer", "unreachable", "timed out")), err


def test_refused_key(cluster, mp, tmp_path):
    """A key the cluster does not know (client.nobody with a made-up key)."""
    keyring = tmp_path / "nobody.keyring"
    run(["ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n",
         "client.nobody"])
    res, took = mount_cmd("none", str(mp), "-o",
                          f"conf={cluster.conf_path},id=nobody,keyring={keyring}")
    err = check_failed(res, took, mp, "client.nobody")
    assert any(w in err.lower() for w in ("refused", "denied", "permission")), err


def test_id_without_key(cluster, mp):
    """id=nobody: the cluster's keyring has no key for client.nobody."""
    res, took = mount_cmd("none", str(mp), "-o", f"conf={cluster.conf_path},id=nobody")
    check_failed(res, took, mp, "client.nobody")


def test_missing_keyring_file(cluster, mp, tmp_path):
    res, took = mount_cmd("none", str(mp), "-o",
                          f"conf={cluster.conf_path},keyring={tmp_path / 'nokeyring'}")
    check_failed(res, took, mp, "keyring", str(tmp_path / "nokeyring"))


def test_missing_mountpoint(cluster, tmp_path):
    mp = tmp_path / "does-not-exist"
    res, took = mount_cmd("none", str(mp), "-o", f"conf={cluster.conf_path}")
    check_failed(res, took, mp, str(mp), "does not exist")
    assert not mp.exists()


def test_mountpoint_is_a_file(cluster, tmp_path):
    mp = tmp_path / "afile"
    mp.write_text("x")
    res, took = mount_cmd("none", str(mp), "-o", f"conf={cluster.conf_path}")
    check_failed(res, took, mp, "not a directory")


def test_busy_mountpoint(cluster, mnt):
    assert mounted(mnt.path) == 1
    before = daemon_pids(mnt.path)
    res, took = mount_cmd("none", str(mnt.path), "-o", f"conf={cluster.conf_path}")
    err = res.stderr.strip()
    assert res.returncode != 0
    assert took < FAIL_WITHIN
    assert "Traceback" not in res.stderr
    assert len(err.splitlines()) == 1, err
    assert "busy" in err and str(mnt.path) in err, err
    # the existing mount is untouched and still works
    assert mounted(mnt.path) == 1
    assert daemon_pids(mnt.path) == before
    assert json.loads((mnt.path / ".radosfs-stats").read_text())


@pytest.mark.parametrize("opt, words", [
    ("frobnicate", ["frobnicate", "unknown"]),
    ("frobnicate=3", ["frobnicate", "unknown"]),
    ("uid=abc", ["uid"]),
    ("umask=999", ["umask"]),
    ("cache_size=lots", ["cache_size"]),
    ("connect_timeout=", ["connect_timeout"]),
])
def test_bad_option(cluster, mp, opt, words):
    res, took = mount_cmd("none", str(mp), "-o", f"conf={cluster.conf_path},{opt}")
    check_failed(res, took, mp, *words)


# ---- mount(8), umount(8), signals -------------------------------------------------------

def test_mount_t_radosfs_and_umount_writes_back(cluster, pool, tmp_path):
    if not os.path.exists("/sbin/mount.radosfs"):
        pytest.fail("/sbin/mount.radosfs missing: run scripts/setup")
    mp = tmp_path / "viamount"
    mp.mkdir()
    data = os.urandom(6 * MiB + 1234)
    (tmp_path / "data").write_bytes(data)
    try:
        res = subprocess.run(["mount", "-t", "radosfs", "none", str(mp), "-o",
                              f"conf={cluster.conf_path}"], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert mounted(mp) == 1
        assert mount_type(mp) == "fuse.radosfs"
        assert pool in os.listdir(mp)
        # dd without any fsync, then umount: the data must be in RADOS when umount returns
        run(["dd", f"if={tmp_path / 'data'}", f"of={mp / pool / 'viamount.bin'}", "bs=1M",
             "status=none"])
        res = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert rados_get(cluster, pool, "viamount.bin", tmp_path) == data
        assert mounted(mp) == 0
        deadline = time.monotonic() + 15
        while daemon_pids(mp) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon_pids(mp) == []
    finally:
        unmount(mp)


def test_umount_returns_after_data_is_in_rados(cluster, pool, tmp_path):
    mp = tmp_path / "um"
    pieces = {f"f{i}": os.urandom(n) for i, n in enumerate((1, 4096, 3 * MiB + 5, 9 * MiB))}
    with direct_mount(cluster, mp) as log:
        for name, data in pieces.items():
            (tmp_path / name).write_bytes(data)
            run(["dd", f"if={tmp_path / name}", f"of={mp / pool / name}", "bs=64k",
                 "status=none"])
        # and a partial overwrite of one of them
        run(["dd", "if=/dev/zero", f"of={mp / pool / 'f2'}", "bs=1000", "count=3", "seek=7",
             "conv=notrunc", "status=none"])
        d = bytearray(pieces["f2"])
        d[7000:10000] = bytes(3000)
        pieces["f2"] = bytes(d)
        res = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        for name, data in pieces.items():
            assert rados_get(cluster, pool, name, tmp_path) == data, name
        assert mounted(mp) == 0
    assert "unmounted" in log.read_text()


WRITER = r"""
import os, sys
path, size = sys.stdin.readline().strip(), int(sys.argv[1])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
data = open(sys.argv[2], "rb").read()
assert os.write(fd, data) == len(data)
print("written", flush=True)
sys.stdin.readline()   # hold the file open (no close, no fsync) until told
"""


def test_sigterm_unmounts_and_writes_back(cluster, pool, tmp_path):
    mp = tmp_path / "sigterm-mp"
    closed = os.urandom(5 * MiB + 3)
    held = os.urandom(3 * MiB + 17)   # below a write unit: stays dirty while open
    (tmp_path / "closed").write_bytes(closed)
    (tmp_path / "held").write_bytes(held)
    writer = None
    with direct_mount(cluster, mp) as log:
        run(["dd", f"if={tmp_path / 'closed'}", f"of={mp / pool / 'closed.bin'}", "bs=1M",
             "status=none"])
        # a writer that keeps its file open with written, unflushed data
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(len(held)),
                                   str(tmp_path / "held")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            writer.stdin.write(str(mp / pool / "held.bin") + "\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "written"
            pids = daemon_pids(mp)
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGTERM)
            deadline = time.monotonic() + FAIL_WITHIN
            while (mounted(mp) or daemon_pids(mp)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert mounted(mp) == 0, "still mounted after SIGTERM"
            assert daemon_pids(mp) == [], "daemon still running after SIGTERM"
        finally:
            writer.kill()
            writer.wait()
        text = log.read_text()
        assert "signal 15" in text, text
        assert "unmounted" in text and "after an error" not in text, text
        assert rados_get(cluster, pool, "closed.bin", tmp_path) == closed
        assert rados_get(cluster, pool, "held.bin", tmp_path) == held


# ---- ro ---------------------------------------------------------------------------------

def test_ro_mount(cluster, mount_factory, pool, tmp_path):
    data = os.urandom(200_000)
    (tmp_path / "obj").write_bytes(data)
    run(["rados", "-p", pool, "put", "obj", str(tmp_path / "obj")], cluster)
    run(["rados", "-p", pool, "put", "dir/inner", str(tmp_path / "obj")], cluster)
    m = mount_factory("ro")
    f = m / pool / "obj"
    # reads work
    run(["cmp", str(tmp_path / "obj"), str(f)])
    run(["cmp", str(tmp_path / "obj"), str(m / pool / "dir/inner")])
    assert sorted(os.listdir(m / pool)) == ["dir", "obj"]
    assert run(["getfattr", "-d", str(f)]).returncode == 0
    # every change is refused with EROFS
    attempts = {
        "overwrite": f"echo x > '{f}'",
        "append": f"echo x >> '{f}'",
        "create": f"echo x > '{m / pool / 'new'}'",
        "dd": f"dd if=/dev/zero of='{f}' bs=1 count=1 conv=notrunc status=none",
        "truncate": f"truncate -s 0 '{f}'",
        "mkdir": f"mkdir '{m / pool / 'newdir'}'",
        "mkdir pool": f"mkdir '{m / ('ro-' + pool)}'",
        "rm": f"rm -f '{f}'",
        "rmdir": f"rmdir '{m / pool / 'dir'}'",
        "mv": f"mv '{f}' '{m / pool / 'moved'}'",
        "setfattr": f"setfattr -n user.x -v y '{f}'",
        "touch": f"touch -d @1000000000 '{f}'",
    }
    for what, cmd in attempts.items():
        res = run(cmd, check=False)
        assert res.returncode != 0, f"{what} succeeded on a ro mount"
        assert "Read-only file system" in res.stderr.decode(), (what, res.stderr)
    # nothing changed in the cluster
    names = set(run(["rados", "-p", pool, "ls"], cluster).stdout.decode().split())
    assert names == {"obj", "dir/inner"}
    assert rados_get(cluster, pool, "obj", tmp_path) == data
    assert run(["rados", "-p", pool, "listxattr", "obj"], cluster).stdout.strip() == b""
    assert "ro-" + pool not in cluster.ceph("osd", "pool", "ls").split()


# ---- the stats file ---------------------------------------------------------------------

def test_stats_file(mnt, pool, tmp_path):
    stats_path = mnt.path / ".radosfs-stats"
    before = json.loads(run(["cat", str(stats_path)]).stdout)
    assert isinstance(before["cache"], dict) and isinstance(before["rados"], dict)
    for k in ("hits", "misses", "bytes_read", "bytes_written", "dirty_bytes"):
        assert isinstance(before["cache"][k], int), k
    for k in ("aio_ops", "errors", "ops_in_flight"):
        assert isinstance(before["rados"][k], int), k
    data = os.urandom(2 * MiB)
    (tmp_path / "d").write_bytes(data)
    run(["cp", str(tmp_path / "d"), str(mnt / pool / "counted")])
    after = json.loads(stats_path.read_bytes())
    assert after["cache"]["bytes_written"] - before["cache"]["bytes_written"] >= len(data)
    assert after["rados"]["aio_ops"] > before["rados"]["aio_ops"]
    assert after["cache"]["dirty_bytes"] == 0
    st = os.stat(stats_path)
    assert oct(st.st_mode & 0o777) == oct(0o444)
    res = run(f"echo x > '{stats_path}'", check=False)
    assert res.returncode != 0
    assert "Permission denied" in res.stderr.decode() or "Read-only" in res.stderr.decode()
    # still valid JSON afterwards, read with a small buffer (several read calls)
    small = run(["dd", f"if={stats_path}", "bs=7", "status=none"]).stdout
    json.loads(small)
