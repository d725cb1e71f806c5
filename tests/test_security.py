"""Security through the real mount (issue 8, section 4): cephx users confined to a pool or
to reading, `ro` mounts, who may use the mount, and keyring permissions.

Every change is tried by a real program in a subprocess with a timeout of its own (a hang
fails the test, never the suite). "No state left" is checked on the cluster itself, as
client.admin: every object of the pools involved with its size, xattrs and omap, the
pools' snapshots, and the list of pools -- taken before and after and compared.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import rados

from conftest import Mount, healthy, run

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
DENIED = (errno.EACCES, errno.EPERM)
REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)

# One change through the mount: does it, syncs it, prints the errno of the first failure
# ("0" when it worked). Run in a subprocess so that a hang is a timeout, not a stuck test.
_TRY = r"""
import errno, os, sys
op, path, arg = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
try:
    if op == "create":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"new data\n"); os.fsync(fd); os.close(fd)
    elif op == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"more\n"); os.fsync(fd); os.close(fd)
    elif op == "overwrite":
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"XX", 1); os.fsync(fd); os.close(fd)
    elif op == "touch":
        os.utime(path, (1, 1))
    elif op == "truncate":
        os.truncate(path, int(arg))
    elif op == "rm":
        os.unlink(path)
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "rmdir":
        os.rmdir(path)
    elif op == "mv":
        os.rename(path, arg)
    elif op == "setfattr":
        os.setxattr(path, "user.test", b"value")
    elif op == "rmxattr":
        os.removexattr(path, arg)
    elif op == "chmod":
        os.chmod(path, 0o600)
    elif op == "symlink":
        os.symlink("target", path)
    elif op == "read":
        with open(path, "rb") as f:
            sys.stdout.write(f.read().decode(errors="replace"))
        sys.exit(0)
    elif op == "list":
        print("\n".join(sorted(os.listdir(path))))
        sys.exit(0)
    elif op == "stat":
        os.stat(path)
    print(0)
except OSError as exc:
    if op in ("read", "list"):
        sys.stderr.write(f"{op}: {exc.strerror}\n")
        sys.exit(1)
    print(exc.errno)
"""


def attempt(op: str, path: Path | str, arg: str = "", user: list[str] | None = None,
            timeout: float = 60) -> int:
    """Run one operation through the mount; its errno (0 = it worked)."""
    res = subprocess.run([*(user or []), sys.executable, "-c", _TRY, op, str(path), arg],
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{op} {path}: {res.stderr}"
    return int(res.stdout.split()[-1])


def read_as(path: Path, user: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(user or []), sys.executable, "-c", _TRY, "read", str(path)],
                          capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- the cluster's state

def cluster_state(cluster, pools: list[str]) -> dict:
    """Everything a change could leave behind, read as client.admin."""
    state: dict = {}
    with rados.Rados(conffile=str(cluster.conf_path)) as r:
        state["pools"] = sorted(r.list_pools())
        for pool in pools:
            with r.open_ioctx(pool) as io:
                io.set_namespace(rados.LIBRADOS_ALL_NSPACES)
                names = sorted((o.nspace, o.key) for o in io.list_objects())
                objects = {}
                for ns, key in names:
                    io.set_namespace(ns)
                    size, mtime = io.stat(key)
                    xattrs = dict(io.get_xattrs(key))
                    with rados.ReadOpCtx() as op:
                        it, _ = io.get_omap_vals(op, "", "", 10000)
                        io.operate_read_op(op, key)
                        omap = dict(it)
                    data = io.read(key, min(size, 1 << 20)) if size else b""
                    objects[(ns, key)] = (size, tuple(mtime), xattrs, omap, data)
                state[pool] = objects
                state[pool + "@snaps"] = sorted(s.name for s in io.list_snaps())
    return state


# ---------------------------------------------------------------- users and fixtures

class Users:
    """cephx users made for one test (keyring files under tmp_path), removed after it."""

    def __init__(self, cluster, tmp: Path) -> None:
        self.cluster, self.tmp, self.names = cluster, tmp, []

    def make(self, osd_caps: str, mon_caps: str = "allow r") -> tuple[str, Path]:
        name = "client.rfs-" + uuid.uuid4().hex[:8]
        keyring = self.tmp / f"{name}.keyring"
        self.cluster.ceph("auth", "get-or-create", name, "mon", mon_caps, "osd", osd_caps,
                          "-o", str(keyring))
        keyring.chmod(0o600)
        self.names.append(name)
        return name, keyring

    def remove(self) -> None:
        for name in self.names:
            self.cluster.ceph("auth", "del", name)


@pytest.fixture
def users(cluster, tmp_path):
    u = Users(cluster, tmp_path)
    yield u
    u.remove()
    left = cluster.ceph("auth", "ls")
    assert not any(n in left for n in u.names), "cephx users left behind"


def _pool(cluster, prefix: str) -> str:
    name = prefix + uuid.uuid4().hex[:8]
    cluster.ceph("osd", "pool", "create", name, "8")
    cluster.ceph("osd", "pool", "application", "enable", name, "test")
    return name


@pytest.fixture
def two_pools(cluster):
    """Pools `a` (the user's) and `b` (someone else's), each with a file, a directory with
    a file, and an object with xattrs and omap, written as client.admin."""
    pools = [_pool(cluster, "sa-"), _pool(cluster, "sb-")]
    for p in pools:
        run(f"echo hello-{p} | rados -p {p} put f -", cluster)
        run(f"echo inner | rados -p {p} put d/g -", cluster)
        run(["rados", "-p", p, "setxattr", "f", "keep", "kept"], cluster)
        run(["rados", "-p", p, "setomapval", "f", "key", "val"], cluster)
    yield pools
    for p in pools:
        cluster.ceph("osd", "pool", "rm", p, p, "--yes-i-really-really-mean-it")


@pytest.fixture
def open_mount(cluster):
    """Mounts on a path every user can reach (pytest's tmp dirs are 0700: `nobody` could
    not get to a mount there whatever the mount allowed)."""
    base = Path(tempfile.mkdtemp(prefix="rf-sec-"))
    base.chmod(0o755)
    mounts: list[Mount] = []

    def make(options: str = "") -> Mount:
        m = Mount(cluster, base / f"m{len(mounts)}", options, log=base / f"m{len(mounts)}.log")
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.close()
    shutil.rmtree(base, ignore_errors=True)


def _new_log(mount, start: int) -> str:
    return mount.read_log()[start:]


# ---------------------------------------------------------------- a user confined to a pool

def test_pool_confined_user_reads_writes_own_pool_denied_elsewhere(cluster, users,
                                                                     two_pools, mount_factory):
    a, b = two_pools
    name, keyring = users.make(f"allow rw pool={a}")
    m = mount_factory(f"name={name},keyring={keyring},op_timeout=20")
    gen = healthy(m)
    next(gen)
    # Its own pool: read, write, list, rename, remove.
    assert read_as(m / a / "f").stdout == f"hello-{a}\n"
    assert attempt("create", m / a / "new") == 0
    assert attempt("append", m / a / "f") == 0
    assert attempt("mkdir", m / a / "dir") == 0
    assert attempt("mv", m / a / "new", str(m / a / "dir" / "moved")) == 0
    assert read_as(m / a / "dir" / "moved").stdout == "new data\n"
    assert attempt("setfattr", m / a / "f") == 0
    assert run(["rados", "-p", a, "getxattr", "f", "test"], cluster).stdout == b"value"
    assert "moved" in attempt_list(m / a / "dir")
    assert attempt("rm", m / a / "dir" / "moved") == 0
    # The root lists every pool (mon 'allow r'), b included: never an empty listing.
    assert {a, b} <= set(attempt_list(m.path))
    # Every other pool: EACCES/EPERM, fast, one log line per refusal, state untouched.
    before = cluster_state(cluster, [b])
    start = len(m.read_log())
    tries = [("list", m / b), ("read", m / b / "f"), ("stat", m / b / "f"),
             ("create", m / b / "x"), ("mkdir", m / b / "dir"), ("rm", m / b / "f"),
             ("setfattr", m / b / "f"), ("truncate", m / b / "f", "0"),
             ("mv", m / b / "f", str(m / b / "f2")), ("mkdir", m / b / ".snap" / "s")]
    for op, path, *arg in tries:
        if op in ("list", "read"):
            res = subprocess.run([sys.executable, "-c", _TRY, op, str(path)],
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode != 0, f"{op} {path} worked: {res.stdout!r}"
            assert "Permission denied" in res.stderr or "not permitted" in res.stderr, \
                res.stderr
            continue
        err = attempt(op, path, *arg)
        # stat of a name in an unreadable pool may say ENOENT after the lookup's EACCES
        assert err in DENIED, f"{op} {path}: {os.strerror(err) if err else 'worked'}"
    log = _new_log(m, start)
    lines = [ln for ln in log.splitlines() if b in ln]
    assert lines, "no log line names the pool:\n" + log
    print(f"\n{len(tries)} refusals in pool {b}: {len(lines)} log lines:\n" + "\n".join(lines))
    assert len(lines) <= len(tries), f"{len(lines)} log lines for {len(tries)} refusals"
    assert cluster_state(cluster, [b]) == before
    # Its own pool still works after all that.
    assert read_as(m / a / "f").stdout.startswith(f"hello-{a}\n")
    next(gen, None)


def attempt_list(path: Path) -> list[str]:
    res = subprocess.run([sys.executable, "-c", _TRY, "list", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


# ---------------------------------------------------------------- nothing changes

def _changes(m, pool: str) -> list[tuple]:
    """Every kind of change, in an object pool and at the root."""
    p = m / pool
    return [("create", p / "new"), ("append", p / "f"), ("overwrite", p / "f"),
            ("touch", p / "f"), ("truncate", p / "f", "0"), ("truncate", p / "f", "100"),
            ("rm", p / "f"), ("rm", p / "d" / "g"), ("rmdir", p / "d"), ("mkdir", p / "e"),
            ("mv", p / "f", str(p / "f2")), ("mv", p / "d" / "g", str(p / "g")),
            ("setfattr", p / "f"), ("rmxattr", p / "f", "user.keep"), ("chmod", p / "f"),
            ("symlink", p / "ln"), ("mkdir", p / ".snap" / "snap1"),
            ("mkdir", m / ("newpool-" + uuid.uuid4().hex[:6])), ("rmdir", p),
            ("mv", p, str(m / "renamed-pool"))]


def _try_all(m, pool: str, allowed: tuple[int, ...]) -> dict[str, int]:
    results = {}
    for op, path, *arg in _changes(m, pool):
        err = attempt(op, path, *arg)
        results[f"{op} {Path(path).relative_to(m.path)} {' '.join(arg)}".strip()] = err
    wrong = {k: (os.strerror(v) if v else "worked") for k, v in results.items()
             if v not in allowed}
    assert not wrong, f"changes not refused: {wrong}"
    return results


def test_read_only_user_changes_nothing(cluster, users, two_pools, mount_factory):
    a, _ = two_pools
    name, keyring = users.make("allow r")
    m = mount_factory(f"name={name},keyring={keyring},op_timeout=20")
    gen = healthy(m)
    next(gen)
    assert read_as(m / a / "f").stdout == f"hello-{a}\n"
    before = cluster_state(cluster, [a])
    # rmdir of a non-empty directory and a pool moved under the root are refused for
    # their own reasons first (ENOTEMPTY, EXDEV): refused all the same.
    _try_all(m, a, REFUSED + (errno.ENOTEMPTY, errno.EXDEV))
    assert cluster_state(cluster, [a]) == before
    assert read_as(m / a / "f").stdout == f"hello-{a}\n"
    assert attempt_list(m / a / "d") == ["g"]
    next(gen, None)


def test_ro_mount_changes_nothing(cluster, two_pools, mount_factory):
    a, _ = two_pools
    m = mount_factory("ro")
    gen = healthy(m)
    next(gen)
    before = cluster_state(cluster, [a])
    results = _try_all(m, a, (errno.EROFS,))
    assert set(results.values()) == {errno.EROFS}
    assert cluster_state(cluster, [a]) == before
    assert read_as(m / a / "f").stdout == f"hello-{a}\n"
    next(gen, None)


# ---------------------------------------------------------------- who may use the mount

def test_only_the_mounting_user_by_default(cluster, pool, open_mount):
    run(f"echo open | rados -p {pool} put f -", cluster)
    m = open_mount("")
    assert read_as(m / pool / "f").stdout == "open\n"
    res = read_as(m / pool / "f", NOBODY)
    assert res.returncode != 0 and "Permission denied" in res.stderr, res
    assert attempt("stat", m.path, user=NOBODY) == errno.EACCES
    assert attempt("create", m / pool / "n", user=NOBODY) == errno.EACCES


def test_allow_other_checks_modes(cluster, pool, open_mount):
    m = open_mount("allow_other")
    private, public = m / pool / "private", m / pool / "public"
    private.write_text("secret\n")
    public.write_text("public\n")
    os.chmod(private, 0o600)
    os.chmod(public, 0o644)
    assert read_as(private).stdout == "secret\n"          # root, the owner
    assert read_as(public, NOBODY).stdout == "public\n"   # others may use the mount...
    res = read_as(private, NOBODY)                        # ...but modes hold
    assert res.returncode != 0 and "Permission denied" in res.stderr, res
    assert attempt("append", public, user=NOBODY) == errno.EACCES
    assert attempt("chmod", public, user=NOBODY) == errno.EPERM
    assert public.read_text() == "public\n"
    # also after a remount: the modes are on the cluster, not in the daemon
    m.close()
    m2 = open_mount("allow_other")
    res = read_as(m2 / pool / "private", NOBODY)
    assert res.returncode != 0 and "Permission denied" in res.stderr, res
    assert read_as(m2 / pool / "public", NOBODY).stdout == "public\n"


def readable_warnings(m) -> list[str]:
    """The mount log's lines about a key file others can read."""
    return [ln for ln in m.read_log().splitlines() if "readable by" in ln]


def test_keyring_readable_by_others_is_warned_about(cluster, users, pool, mount_factory):
    name, keyring = users.make(f"allow rw pool={pool}")
    m = mount_factory(f"name={name},keyring={keyring}")
    assert not readable_warnings(m)
    m.close()
    keyring.chmod(0o644)
    m = mount_factory(f"name={name},keyring={keyring}")
    warned = readable_warnings(m)
    assert len(warned) == 1 and "WARNING" in warned[0] and str(keyring) in warned[0], warned
    assert "key =" not in m.read_log()


def test_secretfile_readable_by_others_is_warned_about(cluster, users, pool, mount_factory):
    """As for a keyring: a secretfile= others can read gets one warning line at mount
    (naming the file, never the key); a 600 one none; the mount works either way."""
    name, keyring = users.make(f"allow rw pool={pool}")
    key = re.search(r"key = (\S+)", keyring.read_text()).group(1)
    secret = keyring.with_suffix(".secret")
    secret.write_text(key + "\n")
    secret.chmod(0o600)
    m = mount_factory(f"name={name},secretfile={secret}")
    (m / pool / "via-secret").write_bytes(b"x")
    assert not readable_warnings(m)
    m.close()
    secret.chmod(0o604)
    m = mount_factory(f"name={name},secretfile={secret}")
    warned = readable_warnings(m)
    assert len(warned) == 1 and "WARNING" in warned[0] and str(secret) in warned[0], warned
    assert "readable by others" in warned[0]
    assert key not in m.read_log()
    assert (m / pool / "via-secret").read_bytes() == b"x"
