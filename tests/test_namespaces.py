"""RADOS namespaces (`namespace=NS`, `POOL/.ns/NS/`) and RBD namespaces (directories of an
image pool), through the real mount, checked with `rados -N` and `rbd`."""
from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

import pytest

from radosfs.options import OptionError, parse_options

from conftest import healthy, os_fails, rbd, rbd_export, run

FLAG = b".radosfs-attrs"


def rados_ns(cluster, pool: str, ns: str, *args: str, check: bool = True) -> bytes:
    """`rados -p POOL -N NS ARGS...` ("" = the default namespace)."""
    return run(["rados", "-p", pool, *(["-N", ns] if ns else []), *args], cluster,
               check=check).stdout


def ls_ns(cluster, pool: str, ns: str) -> set[bytes]:
    """`rados -N NS ls`, less radosfs's flag object."""
    return set(rados_ns(cluster, pool, ns, "ls").split(b"\n")) - {b"", FLAG}


def put_ns(cluster, pool: str, ns: str, oid: str, data: bytes, tmp: Path) -> None:
    src = tmp / ("put-" + uuid.uuid4().hex)
    src.write_bytes(data)
    rados_ns(cluster, pool, ns, "put", oid, str(src))
    src.unlink()


def get_ns(cluster, pool: str, ns: str, oid: str, tmp: Path) -> bytes:
    out = tmp / ("get-" + uuid.uuid4().hex)
    rados_ns(cluster, pool, ns, "get", oid, str(out))
    data = out.read_bytes()
    out.unlink()
    return data


@pytest.fixture
def m(mnt):
    yield from healthy(mnt)


@pytest.fixture(scope="module")
def ns_mount(mount_factory):
    """A mount of RADOS namespace `tenant` (`rbd --namespace tenant` in image pools)."""
    md = mount_factory("namespace=tenant")
    yield md
    md.close()


@pytest.fixture
def nm(ns_mount):
    yield from healthy(ns_mount)


# ---- mount option namespace= -------------------------------------------------------------

def test_option_namespace_parsed():
    assert parse_options(["namespace=a b"]).namespace == "a b"
    assert parse_options(["namespace=x,namespace="]).namespace == ""   # the last wins
    assert parse_options([]).namespace == ""
    with pytest.raises(OptionError, match="namespace needs a value"):
        parse_options(["namespace"])


def test_namespace_option_shows_and_writes_only_that_namespace(nm, pool, cluster, tmp_path):
    put_ns(cluster, pool, "", "default-only", b"default\n", tmp_path)
    put_ns(cluster, pool, "tenant", "t/file", b"tenant data\n", tmp_path)
    put_ns(cluster, pool, "other", "other-only", b"other\n", tmp_path)
    top = nm.path / pool
    assert sorted(os.listdir(top)) == ["t"]
    assert run(["cat", str(top / "t/file")]).stdout == b"tenant data\n"
    src = tmp_path / "src"
    src.write_bytes(os.urandom(300_000))
    run(["cp", str(src), str(top / "written")])
    run(["mkdir", str(top / "newdir")])
    assert get_ns(cluster, pool, "tenant", "written", tmp_path) == src.read_bytes()
    assert ls_ns(cluster, pool, "tenant") == {b"t/file", b"written", b"newdir/"}
    assert ls_ns(cluster, pool, "") == {b"default-only"}          # nothing leaked
    assert ls_ns(cluster, pool, "other") == {b"other-only"}
    run(["rm", str(top / "written")])
    assert b"written" not in ls_ns(cluster, pool, "tenant")
    # Scoped: no way out to the other namespaces.
    os_fails(os.stat, errno.ENOENT, top / ".ns")


def test_namespace_option_pool_snapshot_reads_the_namespace(nm, pool, cluster, tmp_path):
    put_ns(cluster, pool, "tenant", "f", b"before\n", tmp_path)
    put_ns(cluster, pool, "", "f", b"default\n", tmp_path)
    run(["mkdir", str(nm.path / pool / ".snap/s1")])
    put_ns(cluster, pool, "tenant", "f", b"after\n", tmp_path)
    assert run(["cat", str(nm.path / pool / ".snap/s1/f")]).stdout == b"before\n"
    assert rados_ns(cluster, pool, "", "lssnap").count(b"s1") == 1  # a pool snapshot


# ---- POOL/.ns/NAME/ ---------------------------------------------------------------------

def test_dot_ns_reaches_every_namespace(m, pool, cluster, tmp_path):
    put_ns(cluster, pool, "", "plain", b"p\n", tmp_path)
    put_ns(cluster, pool, "", ".ns/shadow", b"x\n", tmp_path)  # hidden by the reserved name
    put_ns(cluster, pool, "ns1", "a/b", b"in ns1\n", tmp_path)
    put_ns(cluster, pool, "ns2", "c", b"in ns2\n", tmp_path)
    put_ns(cluster, pool, "x/y", "z", b"not a file name\n", tmp_path)
    top = m.path / pool
    assert sorted(os.listdir(top)) == ["plain"]                # .ns is not listed
    mark = len(m.read_log())
    assert sorted(os.listdir(top / ".ns")) == ["ns1", "ns2"]
    assert f"pool {pool}: 1 namespace(s) under /.ns not shown" in m.read_log()[mark:]
    assert stat.S_ISDIR(os.stat(top / ".ns/ns1").st_mode)
    assert run(["cat", str(top / ".ns/ns1/a/b")]).stdout == b"in ns1\n"
    assert os.listdir(top / ".ns/ns2") == ["c"]
    run(["cp", str(top / ".ns/ns2/c"), str(top / ".ns/ns1/copied")])
    assert get_ns(cluster, pool, "ns1", "copied", tmp_path) == b"in ns2\n"
    # mv across namespaces: EXDEV inside, so mv copies; each namespace ends as it should
    run(["mv", str(top / ".ns/ns1/copied"), str(top / ".ns/ns2/moved")])
    run(["mv", str(top / "plain"), str(top / ".ns/ns2/plain")])
    assert get_ns(cluster, pool, "ns2", "moved", tmp_path) == b"in ns2\n"
    assert ls_ns(cluster, pool, "ns1") == {b"a/b"}
    assert ls_ns(cluster, pool, "ns2") == {b"c", b"moved", b"plain"}
    run(["mv", str(top / ".ns/ns2/plain"), str(top / "plain")])
    assert ls_ns(cluster, pool, "") == {b"plain", b".ns/shadow"}
    # rm -r: the namespace outlives its last file (its flag object, as a directory's
    # marker), so rmdir finds it; then it holds nothing and is gone.
    run(["rm", "-r", str(top / ".ns/ns2")])   # c and moved, then the namespace
    assert rados_ns(cluster, pool, "ns2", "ls") == b""
    os_fails(os.stat, errno.ENOENT, top / ".ns/ns2")
    assert sorted(os.listdir(top / ".ns")) == ["ns1"]
    os_fails(os.stat, errno.ENOENT, top / ".ns/never")
    os_fails(os.open, errno.EPERM, str(top / ".ns/x"), os.O_CREAT | os.O_WRONLY)


def test_dot_ns_mkdir_rmdir(m, pool, cluster, tmp_path):
    ns = m.path / pool / ".ns"
    run(["mkdir", str(ns / "fresh")])
    assert set(rados_ns(cluster, pool, "fresh", "ls").split()) == {FLAG}
    assert "fresh" in os.listdir(ns)
    assert os.listdir(ns / "fresh") == []
    run(["mkdir", str(ns / "fresh/d")])
    assert ls_ns(cluster, pool, "fresh") == {b"d/"}
    os_fails(os.rmdir, errno.ENOTEMPTY, ns / "fresh")
    run(["rmdir", str(ns / "fresh/d")])
    run(["rmdir", str(ns / "fresh")])
    everything = rados_ns(cluster, pool, "", "ls", "--all")
    assert b"fresh" not in everything, everything
    os_fails(os.stat, errno.ENOENT, ns / "fresh")


def test_dot_ns_snapshots_are_pool_snapshots(m, pool, cluster, tmp_path):
    put_ns(cluster, pool, "ns1", "f", b"before\n", tmp_path)
    put_ns(cluster, pool, "", "g", b"default\n", tmp_path)
    top = m.path / pool
    run(["mkdir", str(top / ".ns/ns1/.snap/s1")])
    assert b"s1" in rados_ns(cluster, pool, "", "lssnap")      # of the whole pool
    put_ns(cluster, pool, "ns1", "f", b"after\n", tmp_path)
    assert run(["cat", str(top / ".ns/ns1/.snap/s1/f")]).stdout == b"before\n"
    assert run(["cat", str(top / ".ns/ns1/f")]).stdout == b"after\n"
    assert os.listdir(top / ".snap/s1") == ["g"]                 # each namespace its own
    assert os.listdir(top / ".ns/ns1/.snap/s1") == ["f"]
    os_fails(os.unlink, errno.EROFS, top / ".ns/ns1/.snap/s1/f")
    run(["rmdir", str(top / ".snap/s1")])
    assert b"s1" not in rados_ns(cluster, pool, "", "lssnap")


def test_pool_with_objects_only_in_a_namespace_is_not_empty(mount_factory, cluster,
                                                            tmp_path):
    name = "nsdel-" + uuid.uuid4().hex[:8]
    md = mount_factory("allow_pool_delete")
    try:
        run(["mkdir", str(md.path / name)])
        os_fails(os.stat, errno.ENOENT, md.path / name / ".ns/kept")
        run(["mkdir", str(md.path / name / ".ns/kept")])
        run(["cp", "/etc/hostname", str(md.path / name / ".ns/kept/f")])
        assert os.listdir(md.path / name) == []
        os_fails(os.rmdir, errno.ENOTEMPTY, md.path / name)
        assert ls_ns(cluster, name, "kept") == {b"f"}
        run(["rm", str(md.path / name / ".ns/kept/f")])
        run(["rmdir", str(md.path / name / ".ns/kept")])
        run(["rmdir", str(md.path / name)])
        assert name not in cluster.ceph("osd", "pool", "ls").split()
    finally:
        md.close()
        if name in cluster.ceph("osd", "pool", "ls").split():
            cluster.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")


# ---- RBD namespaces as directories of an image pool -------------------------------------

def test_rbd_namespace_is_a_directory(m, image_pool, cluster, tmp_path):
    rbd(cluster, "create", f"{image_pool}/top", "--size", "1M")
    rbd(cluster, "namespace", "create", f"{image_pool}/ns1")
    data = os.urandom(1 << 20)
    src = tmp_path / "img"
    src.write_bytes(data)
    rbd(cluster, "import", "--no-progress", str(src), f"{image_pool}/ns1/disk")
    top = m.path / image_pool
    assert sorted(os.listdir(top)) == ["ns1", "top"]
    assert stat.S_ISDIR(os.stat(top / "ns1").st_mode)
    assert stat.S_ISREG(os.stat(top / "ns1/disk").st_mode)
    assert os.listdir(top / "ns1") == ["disk"]
    assert run(["cat", str(top / "ns1/disk")]).stdout == data
    # write, create, rename, unlink inside the namespace
    run(["dd", "if=/dev/zero", f"of={top / 'ns1/disk'}", "bs=4096", "count=1", "seek=3",
         "conv=notrunc,fsync"])
    want = data[:3 * 4096] + bytes(4096) + data[4 * 4096:]
    assert rbd_export(cluster, f"{image_pool}/ns1/disk") == want
    run(["cp", str(src), str(top / "ns1/new")])
    assert rbd_export(cluster, f"{image_pool}/ns1/new") == data
    run(["mv", str(top / "ns1/new"), str(top / "ns1/renamed")])
    assert sorted(rbd(cluster, "ls", f"{image_pool}/ns1").split()) == [b"disk", b"renamed"]
    assert rbd(cluster, "ls", image_pool).split() == [b"top"]   # the default namespace
    run(["rm", str(top / "ns1/renamed")])
    assert rbd(cluster, "ls", f"{image_pool}/ns1").split() == [b"disk"]
    os_fails(os.mkdir, errno.EPERM, top / "ns1/sub")  # namespaces do not nest


def test_mkdir_rmdir_make_and_remove_rbd_namespaces(m, image_pool, cluster, tmp_path):
    top = m.path / image_pool
    run(["mkdir", str(top / "made")])
    assert b"made" in rbd(cluster, "namespace", "ls", image_pool).split()
    run(["cp", "/etc/hostname", str(top / "made/img")])
    assert rbd(cluster, "ls", f"{image_pool}/made").split() == [b"img"]
    os_fails(os.rmdir, errno.ENOTEMPTY, top / "made")
    os_fails(os.rmdir, errno.ENOTDIR, top / "made/img")
    # rm -r: the image goes to the trash and is purged; rmdir waits for that
    run(["rm", "-r", str(top / "made")])
    assert b"made" not in rbd(cluster, "namespace", "ls", image_pool).split()
    os_fails(os.stat, errno.ENOENT, top / "made")


def test_image_and_namespace_of_one_name_show_the_image(m, image_pool, cluster):
    rbd(cluster, "create", f"{image_pool}/same", "--size", "1M")
    rbd(cluster, "namespace", "create", f"{image_pool}/same")
    top = m.path / image_pool
    assert os.listdir(top) == ["same"]
    assert stat.S_ISREG(os.stat(top / "same").st_mode)
    os_fails(os.mkdir, errno.EEXIST, top / "same")


def test_snapshots_inside_an_rbd_namespace(m, image_pool, cluster, tmp_path):
    rbd(cluster, "create", f"{image_pool}/top", "--size", "1M")
    rbd(cluster, "namespace", "create", f"{image_pool}/ns1")
    top = m.path / image_pool
    src = tmp_path / "v1"
    src.write_bytes(os.urandom(65536))
    run(["cp", str(src), str(top / "ns1/disk")])
    run(["mkdir", str(top / "ns1/.snap/s1")])
    assert b"s1" in rbd(cluster, "snap", "ls", f"{image_pool}/ns1/disk")
    assert rbd(cluster, "snap", "ls", f"{image_pool}/top").strip() == b""   # only ns1's
    run(["dd", "if=/dev/zero", f"of={top / 'ns1/disk'}", "bs=65536", "count=1",
         "conv=notrunc,fsync"])
    assert os.listdir(top / "ns1/.snap") == ["s1"]
    assert run(["cat", str(top / "ns1/.snap/s1/disk")]).stdout == src.read_bytes()
    assert rbd_export(cluster, f"{image_pool}/ns1/disk@s1") == src.read_bytes()
    assert os.listdir(top / ".snap") == []          # the pool's own: its default namespace
    run(["rmdir", str(top / "ns1/.snap/s1")])
    assert b"s1" not in rbd(cluster, "snap", "ls", f"{image_pool}/ns1/disk")


def test_namespace_option_in_an_image_pool(nm, image_pool, cluster, tmp_path):
    rbd(cluster, "create", f"{image_pool}/outside", "--size", "1M")
    top = nm.path / image_pool
    assert os.listdir(top) == []                    # no RBD namespace "tenant" yet
    os_fails(os.open, errno.ENOENT, str(top / "x"), os.O_CREAT | os.O_WRONLY)
    rbd(cluster, "namespace", "create", f"{image_pool}/tenant")
    rbd(cluster, "create", f"{image_pool}/tenant/inside", "--size", "1M")
    assert os.listdir(top) == ["inside"]
    run(["cp", "/etc/hostname", str(top / "new")])
    assert sorted(rbd(cluster, "ls", f"{image_pool}/tenant").split()) == [b"inside", b"new"]
    assert rbd(cluster, "ls", image_pool).split() == [b"outside"]
    os_fails(os.mkdir, errno.EPERM, top / "sub")


def test_mv_in_a_namespace_carries_the_omap_header_there(m, nm, pool, cluster, tmp_path):
    """The omap header is read and set in the file's own namespace (client/omap_header.py
    opens C ioctxs of its own), through `.ns/NS/` and through `namespace=`."""
    from radosfs.client.omap_header import SHIM
    assert SHIM.exists(), f"{SHIM} is not built: run scripts/setup"
    put_ns(cluster, pool, "tenant", "f", b"one", tmp_path)
    put_ns(cluster, pool, "tenant", "h", b"two", tmp_path)
    rados_ns(cluster, pool, "tenant", "setomapheader", "f", "HF")
    rados_ns(cluster, pool, "tenant", "setomapheader", "h", "HH")
    run(["mv", str(m / pool / ".ns" / "tenant" / "f"), str(m / pool / ".ns" / "tenant" / "g")])
    run(["mv", str(nm / pool / "h"), str(nm / pool / "i")])
    assert ls_ns(cluster, pool, "tenant") == {b"g", b"i"}
    assert ls_ns(cluster, pool, "") == set()
    for oid, header, data in (("g", b"HF", b"one"), ("i", b"HH", b"two")):
        out = tmp_path / f"hdr-{oid}"
        rados_ns(cluster, pool, "tenant", "getomapheader", oid, str(out))
        assert out.read_bytes() == header, oid
        assert get_ns(cluster, pool, "tenant", oid, tmp_path) == data
