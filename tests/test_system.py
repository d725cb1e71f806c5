"""radosfs as the system around it uses it: mount(8) and fstab (`mount -T`), remount,
kernel flags, Ceph's option vocabulary, logs (logrotate + SIGHUP), `pip install .` into a
fresh venv, the man pages and the `radosfs` command against a real mount.

Everything runs the real programs. mount(8) runs /sbin/mount.radosfs (scripts/setup), with
PYTHONPATH naming this checkout so the helper runs this checkout's code.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, env_with_repo, run
from radosfs.dev.mount_process import fusermount, pid_alive

MiB = 1 << 20


def mountinfo(path: Path) -> dict | None:
    """The mountinfo entry of `path`: kernel flags, type, source, super options."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        sep = f.index("-")
        if f[4].encode().decode("unicode_escape") == str(path):
            return {"flags": set(f[5].split(",")), "type": f[sep + 1], "source": f[sep + 2],
                    "super": f[sep + 3]}
    return None


def count_mounts(path: Path) -> int:
    return sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if line.split()[4].encode().decode("unicode_escape") == str(path))


def stats(path: Path) -> dict:
    return json.loads((path / ".radosfs-stats").read_text())


def umount_all(path: Path) -> None:
    """Unmount (every stacked mount) and wait for the daemon to exit, by its pid."""
    while count_mounts(path):
        try:
            pid = stats(path)["mount"]["pid"]
        except (OSError, ValueError, KeyError):
            pid = None
        fusermount(path, 30, lambda msg: None)
        if count_mounts(path) and not os.path.ismount(path):
            break
        deadline = time.monotonic() + 30
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def mount8(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    if not os.path.exists("/sbin/mount.radosfs") or not os.path.exists(
            "/sbin/mount.fuse.radosfs"):
        pytest.fail("/sbin/mount.radosfs or /sbin/mount.fuse.radosfs missing: run scripts/setup")
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=timeout,
                          env=env_with_repo())


def radosfs_cmd(*args: str, python: str = sys.executable,
                check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([python, "-m", "radosfs", *args], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=env_with_repo())
    if check:
        assert res.returncode == 0, f"radosfs {args}: {res.stderr}"
    return res


def mount_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radosfs.mount", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=env_with_repo())


@pytest.fixture
def mp(tmp_path):
    p = tmp_path / "mp"
    p.mkdir()
    yield p
    umount_all(p)


@contextmanager
def mounted(cluster, path: Path, options: str = "", source: str = "none"):
    log = path.with_name(path.name + ".log")
    opts = f"conf={cluster.conf_path},log={log}" + (f",{options}" if options else "")
    res = mount_cmd(source, str(path), "-o", opts)
    assert res.returncode == 0, res.stderr
    try:
        yield log
    finally:
        umount_all(path)


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    err = res.stderr.strip()
    assert res.returncode != 0, f"succeeded: {res.stdout}{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w.lower() in err.lower(), f"{w!r} not in {err!r}"
    return err


# ---- mount(8) and fstab ------------------------------------------------------------------

FSTAB_LINES = [
    "none {mp} radosfs conf={conf},_netdev,log={log} 0 0",
    "none {mp} fuse.radosfs conf={conf},_netdev,log={log} 0 0",
    "admin {mp} radosfs conf={conf},log={log},noatime 0 0",
    "client.admin {mp} fuse.radosfs conf={conf},log={log},defaults,nofail 0 0",
    "none {mp} radosfs ceph.conf={conf},ceph.id=admin,log={log},debug 0 0",
]


@pytest.mark.parametrize("line", FSTAB_LINES)
def test_fstab_mount_a_twice_is_a_no_op(cluster, mp, tmp_path, line):
    fstab = tmp_path / "fstab"
    log = tmp_path / "fstab.log"
    fstab.write_text("# a temporary fstab\n" + line.format(mp=mp, conf=cluster.conf_path,
                                                           log=log) + "\n")
    t0 = time.monotonic()
    res = mount8("-a", "-T", str(fstab))
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 30, "mount -a did not return (debug kept it in front?)"
    info = mountinfo(mp)
    assert info and info["type"] == "fuse.radosfs"
    assert info["source"] == line.split()[0]
    assert stats(mp)["cache"]["dirty_bytes"] == 0
    pid = stats(mp)["mount"]["pid"]
    res = mount8("-a", "-T", str(fstab))
    assert res.returncode == 0, res.stderr
    assert count_mounts(mp) == 1
    assert stats(mp)["mount"]["pid"] == pid
    # and by mountpoint alone, as `mount /mnt/ceph` with the line in fstab
    res = mount8("-T", str(fstab), str(mp))
    assert count_mounts(mp) == 1
    if "noatime" in line:
        assert "noatime" in info["flags"]


def test_remount_ro_rw(cluster, mp, pool):
    with mounted(cluster, mp):
        res = mount8("-o", "remount,ro", str(mp))
        assert res.returncode == 0, res.stderr
        assert "ro" in mountinfo(mp)["flags"]
        res = run(f"echo x > '{mp / pool / 'f'}'", check=False)
        assert b"Read-only file system" in res.stderr
        res = mount8("-o", "remount,rw", str(mp))
        assert res.returncode == 0, res.stderr
        assert "rw" in mountinfo(mp)["flags"]
        run(f"echo x > '{mp / pool / 'f'}'")
        assert (mp / pool / "f").read_text() == "x\n"
        assert count_mounts(mp) == 1


def test_remount_rw_of_a_ro_mount_is_one_clear_line(cluster, mp):
    with mounted(cluster, mp, "ro"):
        res = mount8("-o", "remount,rw", str(mp))
        one_line_error(res, "mounted with -o ro", "unmount")
        assert "ro" in mountinfo(mp)["flags"]


def test_kernel_flags_are_honoured(cluster, mp, pool):
    with mounted(cluster, mp, "noexec,noatime,dirsync,nosuid,nodev,fsname=backup,subtype=rfs"):
        info = mountinfo(mp)
        assert {"noexec", "noatime", "nosuid", "nodev"} <= info["flags"], info
        assert "dirsync" in info["super"], info
        assert info["source"] == "backup" and info["type"] == "fuse.rfs", info
        script = mp / pool / "script.sh"
        script.write_text("#!/bin/sh\necho ran\n")
        script.chmod(0o755)
        res = run(f"'{script}'", check=False)   # through sh: EACCES is its message
        assert res.returncode != 0 and b"ran" not in res.stdout
        assert b"Permission denied" in res.stderr


def test_exec_by_default_and_ro_rw_last_wins(cluster, mp, pool):
    with mounted(cluster, mp, "ro,rw"):
        assert "rw" in mountinfo(mp)["flags"]
        script = mp / pool / "script.sh"
        script.write_text("#!/bin/sh\necho ran\n")
        script.chmod(0o755)
        assert run([str(script)]).stdout == b"ran\n"


@pytest.mark.parametrize("opt, words", [
    ("uid=no-such-user-xyz", ["uid must be a number or a user name"]),
    ("gid=no-such-group-xyz", ["gid must be a number or a group name"]),
    ("cache_size=0", ["cache_size"]),
    ("cache_size=lots", ["cache_size must be a size"]),
    ("op_timeout=soon", ["op_timeout must be a number"]),
    ("secret=AQDverysecretkey==", ["secretfile"]),
    ("foreign_pools=maybe", ["foreign_pools"]),
    ("log_level=loud", ["log_level"]),
    ("ceph.no_such_ceph_option=1", ["no_such_ceph_option"]),
    ("cluster=nosuchcluster", ["/etc/ceph/nosuchcluster.conf"]),
])
def test_option_errors_in_the_users_language(cluster, mp, opt, words):
    conf = "" if opt.startswith("cluster=") else f"conf={cluster.conf_path},"
    env_conf = os.environ.pop("CEPH_CONF", None)
    try:
        res = mount_cmd("none", str(mp), "-o", conf + opt)
    finally:
        if env_conf is not None:
            os.environ["CEPH_CONF"] = env_conf
    err = one_line_error(res, *words)
    assert "invalid literal" not in err and "AQDverysecretkey" not in err
    assert count_mounts(mp) == 0


def test_user_and_group_names(cluster, mp):
    with mounted(cluster, mp, "uid=nobody,gid=nogroup"):
        st = os.stat(mp / ".radosfs-stats")
        assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_unreadable_keyring_is_not_a_refused_key(cluster, mp, tmp_path):
    (tmp_path / "keyring-dir").mkdir()   # root reads any file; a directory it cannot
    res = mount_cmd("none", str(mp), "-o",
                    f"conf={cluster.conf_path},keyring={tmp_path / 'keyring-dir'}")
    err = one_line_error(res, "cannot read keyring")
    assert "refused" not in err


def test_mon_host_and_secretfile_without_conf(cluster, mp, tmp_path, pool):
    conf = cluster.conf_path.read_text()
    v2 = re.search(r"mon host = \[(v2:[0-9.:]+)", conf).group(1)
    key = re.search(r"key = (\S+)", cluster.keyring_path.read_text()).group(1)
    secret = tmp_path / "admin.secret"
    secret.write_text(key + "\n")
    log = tmp_path / "secret.log"
    env = env_with_repo()
    env.pop("CEPH_CONF", None)
    res = subprocess.run([sys.executable, "-m", "radosfs.mount", "none", str(mp), "-o",
                          f"mon_host={v2},secretfile={secret},log={log},"
                          f"ceph.rados_osd_op_timeout=20,log_level=debug"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr
    assert pool in os.listdir(mp)
    st = stats(mp)
    cmdline = Path(f"/proc/{st['mount']['pid']}/cmdline").read_bytes()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    comm = Path(f"/proc/{st['mount']['pid']}/comm").read_text().strip()
    assert comm == "radosfs"
    umount_all(mp)
    for where, text in (("cmdline", cmdline.decode()), ("ps", ps), ("log", log.read_text()),
                        ("stats", json.dumps(st)), ("stderr", res.stderr)):
        assert key not in text, f"the secret is in {where}"


# ---- logs --------------------------------------------------------------------------------

def test_logrotate_rename_and_sighup(cluster, mp, pool, tmp_path):
    with mounted(cluster, mp) as log:
        pid = stats(mp)["mount"]["pid"]
        rotated = log.with_name(log.name + ".1")
        log.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.exists(), "SIGHUP did not reopen the log"
        assert os.path.ismount(mp) and pid_alive(pid), "SIGHUP unmounted"
        os.setxattr(mp, "user.radosfs.flush", b"1")   # logs "flush asked"
        assert "flush asked" in log.read_text()
        # rotation without SIGHUP: WatchedFileHandler notices the rename by itself
        log.rename(log.with_name(log.name + ".2"))
        os.setxattr(mp, "user.radosfs.flush", b"1")
        assert "flush asked" in log.read_text()
        assert "SIGHUP" in rotated.read_text() or "SIGHUP" in log.with_name(
            log.name + ".2").read_text()


def test_log_level_and_one_line_per_event(cluster, mp, pool, tmp_path):
    with mounted(cluster, mp, "log_level=warning") as log:
        # failing requests (logged as warnings) naming a file with a newline and a
        # control character, and setting an xattr with a binary value
        name = b"bad\nline\x01"
        with pytest.raises(OSError):
            os.setxattr(mp / pool, "user.acl", b"\x02\x00\x00\x00secretvalue\n")
        with pytest.raises(OSError):
            open(os.path.join(bytes(mp), name), "wb")   # a file at the top: EPERM
        text = log.read_text()
    assert "INFO" not in text, text          # log_level=warning
    assert "secretvalue" not in text
    assert "bad\\nline\\x01" in text, text   # escaped, on one line
    for line in text.splitlines():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d [0-9:,]+ [A-Z]+ \S+\[\d+\]: .*", line), line
        assert all(c >= " " for c in line), repr(line)


def test_debug_through_mount8_returns(cluster, mp, tmp_path):
    log = tmp_path / "debug.log"
    res = mount8("-t", "radosfs", "none", str(mp), "-o",
                 f"conf={cluster.conf_path},debug,log={log}", timeout=40)
    assert res.returncode == 0, res.stderr
    os.listdir(mp)
    assert "DEBUG" in log.read_text()


# ---- packaging ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv from /usr/bin/python3 --system-site-packages (rados, rbd), radosfs
    installed by `pip install --no-deps .` (a copy, not editable). pyfuse3 and trio are
    not downloaded: a .pth file adds the project's .venv site-packages after its own."""
    base = tmp_path_factory.mktemp("venv")
    v = base / "v"
    run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(v)])
    py = v / "bin" / "python"
    site = run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
               ).stdout.decode().strip()
    dev_site = run([str(REPO / ".venv/bin/python") if (REPO / ".venv").exists()
                    else sys.executable, "-c",
                    "import pyfuse3, os; print(os.path.dirname(os.path.dirname("
                    "pyfuse3.__file__)) if '__init__' in pyfuse3.__file__ else "
                    "os.path.dirname(pyfuse3.__file__))"]).stdout.decode().strip()
    Path(site, "zz-radosfs-deps.pth").write_text(dev_site + "\n")
    build = base / "src"
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", str(build)], timeout=300)
    yield v


def test_pip_install_gives_commands_and_mounts(cluster, venv, mp, pool):
    import radosfs
    bin_ = venv / "bin"
    for cmd in ("mount.radosfs", "mount.fuse.radosfs", "radosfs"):
        res = run([str(bin_ / cmd), "--version"])
        assert res.stdout.decode().strip() == f"radosfs {radosfs.__version__}"
    res = run([str(bin_ / "python"), "-m", "radosfs", "--version"], cwd="/")
    assert res.stdout.decode().strip() == f"radosfs {radosfs.__version__}"
    where = run([str(bin_ / "python"), "-c", "import radosfs; print(radosfs.__file__)"],
                cwd="/").stdout.decode()
    assert str(venv) in where, where   # the installed copy, not this checkout
    log = mp.with_name("venv.log")
    res = subprocess.run([str(bin_ / "mount.radosfs"), "none", str(mp), "-o",
                          f"conf={cluster.conf_path},log={log}"], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    assert pool in os.listdir(mp)
    res = run([str(bin_ / "radosfs"), "status", str(mp)], cwd="/")
    assert str(mp) in res.stdout.decode()
    # The installed copy has no omap-header shim (scripts/setup builds it in the checkout):
    # the mount says so in one line and renames work, as before, without the header.
    (mp / pool / "f").write_bytes(b"renamed without the shim\n")
    os.rename(mp / pool / "f", mp / pool / "g")
    assert (mp / pool / "g").read_bytes() == b"renamed without the shim\n"
    said = [line for line in log.read_text().splitlines() if "omap headers:" in line]
    assert len(said) == 1 and "not built" in said[0] and "scripts/setup" in said[0], said
    umount_all(mp)


def test_missing_binding_is_one_line(venv, tmp_path, mp):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "rados.py").write_text("raise ImportError('No module named rados', name='rados')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    res = subprocess.run([str(venv / "bin" / "mount.radosfs"), "none", str(mp)],
                         capture_output=True, text=True, env=env, cwd="/")
    one_line_error(res, "python3-rados", "--system-site-packages")


def test_man_pages():
    for page, words in (("mount.radosfs.8", ["secretfile", "fuse.radosfs", "SIGHUP", "remount",
                                             "log_level", "noexec", "foreign_pools"]),
                        ("radosfs.1", ["flush", "snap", "dirty_bytes", "aio_ops", "status"])):
        res = subprocess.run(["man", "-l", str(REPO / "docs/man" / page)], capture_output=True,
                             text=True, env=dict(os.environ, MANWIDTH="80", MANPAGER="cat"))
        assert res.returncode == 0, res.stderr
        assert "NAME" in res.stdout and "SYNOPSIS" in res.stdout
        for w in words:
            assert w in res.stdout, (page, w)
    # every option of --help is in the man page and in docs/options.md
    from radosfs.options import HELP
    man = (REPO / "docs/man/mount.radosfs.8").read_text().replace("\\", "")
    doc = (REPO / "docs/options.md").read_text()
    for key in HELP:
        for name in re.findall(r"[a-z_.]+(?==|\b)", key.split(" ")[0]):
            if name in ("ceph.OPTION",):
                continue
            assert name.rstrip(".") in man, name
            assert name.rstrip(".") in doc, name


def test_stats_fields_are_documented(mnt):
    man = (REPO / "docs/man/radosfs.1").read_text()
    for section, fields in stats(mnt.path).items():
        for field in fields:
            assert field in man, f"{section}.{field} not in radosfs(1)"


# ---- the radosfs command against a real mount -------------------------------------------

WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"z" * 100000)
print("written", flush=True)
sys.stdin.readline()
"""


def test_radosfs_commands(cluster, mp, pool, tmp_path):
    with mounted(cluster, mp):
        out = radosfs_cmd("status", str(mp)).stdout
        assert str(mp) in out and pool in out and "dirty" in out
        st = json.loads(radosfs_cmd("stats", "--json", str(mp)).stdout)
        assert st["mount"]["pid"] and "dirty_bytes" in st["cache"]
        lines = radosfs_cmd("stats", str(mp)).stdout
        assert re.search(r"^cache\.dirty_bytes \d+$", lines, re.M)
        # flush: data held open (dirty, no close, no fsync) reaches RADOS
        w = subprocess.Popen([sys.executable, "-c", WRITER, str(mp / pool / "held")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert w.stdout.readline().strip() == "written"
            assert stats(mp)["cache"]["dirty_bytes"] > 0
            radosfs_cmd("flush", str(mp))
            assert stats(mp)["cache"]["dirty_bytes"] == 0
            got = tmp_path / "got"
            run(["rados", "-p", pool, "get", "held", str(got)], cluster)
            assert got.read_bytes() == b"z" * 100000
        finally:
            w.stdin.close()
            w.wait()
        # snapshots
        radosfs_cmd("snap", "create", pool, "s1", "-m", str(mp))
        assert "s1" in radosfs_cmd("snap", "list", pool, "-m", str(mp)).stdout.split()
        assert "s1" in os.listdir(mp / pool / ".snap")
        radosfs_cmd("snap", "remove", pool, "s1", "-m", str(mp))
        assert "s1" not in radosfs_cmd("snap", "list", pool, "-m", str(mp)).stdout.split()
        res = radosfs_cmd("snap", "remove", pool, "nope", "-m", str(mp), check=False)
        one_line_error(res, "nope")
        res = radosfs_cmd("flush", str(mp / pool), check=False)
        one_line_error(res, "not a radosfs mount")


# ---- scope and protection ----------------------------------------------------------------

@pytest.fixture
def cephfs_pool(cluster):
    name = "cfs-" + os.urandom(4).hex()
    cluster.ceph("osd", "pool", "create", name, "8")
    cluster.ceph("osd", "pool", "application", "enable", name, "cephfs")
    run(["rados", "-p", name, "put", "mds0_openfiles.0", "/etc/hostname"], cluster)
    yield name
    cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


def test_pools_of_other_applications_are_read_only(cluster, mp, cephfs_pool, pool):
    with mounted(cluster, mp):
        f = mp / cephfs_pool / "mds0_openfiles.0"
        assert f.read_bytes() == Path("/etc/hostname").read_bytes()
        assert os.stat(f).st_mode & 0o222 == 0 and os.stat(mp / cephfs_pool).st_mode & 0o222 == 0
        res = run(f"echo x > '{f}'", check=False)
        assert b"Read-only file system" in res.stderr
        assert os.stat(mp / pool).st_mode & 0o200   # an ordinary pool stays writable
    with mounted(cluster, mp, "foreign_pools=rw"):
        run(f"echo x > '{mp / cephfs_pool / 'mine'}'")
    with mounted(cluster, mp, "foreign_pools=hide"):
        assert cephfs_pool not in os.listdir(mp) and pool in os.listdir(mp)
        assert not (mp / cephfs_pool).exists()


def test_pools_option_chooses_what_is_mounted(cluster, mp, pool, cephfs_pool):
    with mounted(cluster, mp, f"pools={pool}"):
        assert os.listdir(mp) == [pool]
        assert not (mp / cephfs_pool).exists()
        res = run(["mkdir", str(mp / "another")], check=False)
        assert res.returncode != 0
