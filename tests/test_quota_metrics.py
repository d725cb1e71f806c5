"""A pool's quota through the mount (xattrs of the pool directory, `df` of a one-pool
mount), the Prometheus metrics (scraped over HTTP and read from the textfile, parsed by a
strict parser of the text format) and the per-mount librados admin socket (`ceph daemon
PATH perf dump`). Real programs throughout: setfattr/getfattr, df, stat, the ceph CLI."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, Mount, env_with_repo, healthy, run

MiB = 1 << 20


def get_quota(cluster, pool: str) -> dict:
    """The pool's quotas as the osdmap has them (`osd pool get-quota` answers ENOENT for
    a pool whose PGs have not reported stats yet)."""
    for p in json.loads(cluster.ceph("osd", "dump", "-f", "json"))["pools"]:
        if p["pool_name"] == pool:
            return p
    raise AssertionError(f"no pool {pool}")


def getfattr(path: Path, name: str) -> subprocess.CompletedProcess:
    return run(["getfattr", "--only-values", "-n", name, str(path)], check=False)


def wait_for(pred, timeout: float, what: str):
    """Poll until pred() is truthy (usage figures come from PG stats: seconds behind)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s: {what}"
        time.sleep(0.5)


@pytest.fixture
def m(mnt):
    yield from healthy(mnt)


# ---- quota xattrs --------------------------------------------------------------------

def test_pool_quota_as_xattrs(cluster, m, pool, image_pool):
    for p in (pool, image_pool):
        d = m / p
        # no quota: ENODATA, as CephFS answers for a directory without one
        res = getfattr(d, "ceph.quota.max_bytes")
        assert res.returncode != 0 and b"No such attribute" in res.stderr
        # set through the mount: the cluster has it
        run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "10485760", str(d)])
        run(["setfattr", "-n", "ceph.quota.max_objects", "-v", "77", str(d)])
        q = get_quota(cluster, p)
        assert (q["quota_max_bytes"], q["quota_max_objects"]) == (10485760, 77)
        assert getfattr(d, "ceph.quota.max_bytes").stdout == b"10485760"
        # set by the cluster's CLI: the mount shows it
        cluster.ceph("osd", "pool", "set-quota", p, "max_objects", "1234")
        assert getfattr(d, "ceph.quota.max_objects").stdout == b"1234"
        # refusals: not a number, the usage, below the pool directory
        for name, value, msg in (("ceph.quota.max_bytes", "10G", "Invalid argument"),
                                 ("ceph.quota.max_bytes", "-1", "Invalid argument"),
                                 ("ceph.pool.used_bytes", "5", "Operation not permitted")):
            res = run(["setfattr", "-n", name, "-v", value, str(d)], check=False)
            assert res.returncode != 0 and msg.encode() in res.stderr, (name, value, res)
        assert get_quota(cluster, p)["quota_max_bytes"] == 10485760
        # not listed (cp -a / rsync -X of the pool directory must not copy them)
        assert b"ceph." not in run(["getfattr", "-d", "-m", "-", str(d)]).stdout
        # removed: setfattr -x, and a value of 0
        run(["setfattr", "-x", "ceph.quota.max_bytes", str(d)])
        run(["setfattr", "-n", "ceph.quota.max_objects", "-v", "0", str(d)])
        q = get_quota(cluster, p)
        assert (q["quota_max_bytes"], q["quota_max_objects"]) == (0, 0)
    # below the pool directory, and in .snap: no such xattrs
    (m / pool / "sub").mkdir()
    res = run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "1", str(m / pool / "sub")],
              check=False)
    assert res.returncode != 0 and b"Operation not supported" in res.stderr
    assert get_quota(cluster, pool)["quota_max_bytes"] == 0


def test_pool_usage_xattrs(cluster, m, pool, tmp_path):
    data = os.urandom(3 * MiB)
    (m / pool / "f").write_bytes(data)
    (m / pool / "g").write_bytes(b"g")
    used = wait_for(lambda: int(getfattr(m / pool, "ceph.pool.used_bytes").stdout or 0)
                    >= len(data) and getfattr(m / pool, "ceph.pool.used_bytes").stdout,
                    60, "ceph.pool.used_bytes to count the file")
    q = json.loads(cluster.ceph("osd", "pool", "get-quota", pool, "-f", "json"))
    assert len(data) <= int(used) <= q["current_num_bytes"] + MiB
    objs = wait_for(lambda: int(getfattr(m / pool, "ceph.pool.objects").stdout or 0) >= 2
                    and getfattr(m / pool, "ceph.pool.objects").stdout, 60, "objects")
    assert int(objs) >= 2


def test_quota_xattrs_refused_on_a_read_only_mount(cluster, mount_factory, pool):
    ro = mount_factory("ro")
    res = run(["setfattr", "-n", "ceph.quota.max_bytes", "-v", "1000000",
               str(ro / pool)], check=False)
    assert res.returncode != 0 and b"Read-only file system" in res.stderr
    assert get_quota(cluster, pool)["quota_max_bytes"] == 0


def test_df_of_a_pool_mount_is_its_quota(cluster, tmp_path, pool, m):
    """df of a mount of one pool (pools=P) shows P's quota; on a mount of every pool,
    df MNT/POOL answers as df MNT (pyfuse3 gives the daemon no inode for statfs)."""
    quota = 64 * MiB
    cluster.ceph("osd", "pool", "set-quota", pool, "max_bytes", str(quota))
    cluster.ceph("osd", "pool", "set-quota", pool, "max_objects", "500")
    (tmp_path / "m").mkdir()
    one = Mount(cluster, tmp_path / "m" / "p", f"pools={pool}")
    try:
        (one / pool / "f").write_bytes(os.urandom(4 * MiB))
        st = os.statvfs(one / pool)
        assert st.f_blocks * st.f_frsize == quota
        assert st.f_files == 500
        wait_for(lambda: os.statvfs(one / pool).f_bavail * 4096 <= quota - 4 * MiB, 60,
                 "df to count the 4 MiB written")
        out = run(["df", "-B1", "--output=size", str(one / pool)]).stdout.split()
        assert out[-1] == str(quota).encode()
        # the quota lifted: the cluster's size again
        run(["setfattr", "-x", "ceph.quota.max_bytes", str(one / pool)])
        assert os.statvfs(one / pool).f_blocks * 4096 > quota
    finally:
        one.close()
    # every pool mounted: a pool directory answers as the mount's root
    a, b = os.statvfs(m.path), os.statvfs(m / pool)
    assert (a.f_blocks, a.f_files) == (b.f_blocks, b.f_files)
    assert a.f_blocks * a.f_frsize != quota


# ---- Prometheus text format: a strict parser ------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
LABEL_NC = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(\{{{LABEL_NC}(?:,{LABEL_NC})*\}})? (\S+)( -?\d+)?$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_exposition(text: str) -> dict[str, dict]:
    """Parse the text exposition format 0.0.4 strictly: every line a HELP, a TYPE or a
    sample; HELP and TYPE at most once per family and before its samples; a family's
    samples contiguous; no series twice; histogram buckets cumulative with le="+Inf" =
    _count, and _sum present; counters never negative. Returns family -> {"type",
    "help", "samples": {(name, labels): value}}; raises AssertionError otherwise."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, dict] = {}
    done: set[str] = set()
    current: str | None = None

    def family_of(name: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and families.get(base, {}).get("type") in (
                    "histogram", "summary"):
                return base
        return name

    for n, line in enumerate(text[:-1].split("\n"), 1):
        assert line, f"line {n}: empty line"
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({NAME}) (.*)$", line)
            assert m, f"line {n}: bad comment {line!r}"
            kind, name, rest = m.groups()
            assert name not in done, f"line {n}: {name} again after other families"
            fam = families.setdefault(name, {"type": "untyped", "help": None,
                                             "samples": {}, "typed": False})
            assert not fam["samples"], f"line {n}: {kind} of {name} after its samples"
            if kind == "TYPE":
                assert not fam["typed"], f"line {n}: second TYPE for {name}"
                assert rest in TYPES, f"line {n}: unknown type {rest!r}"
                fam["type"], fam["typed"] = rest, True
            else:
                assert fam["help"] is None, f"line {n}: second HELP for {name}"
                fam["help"] = rest
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a sample line: {line!r}"
        name, labels_text, value_text = m.group(1), m.group(2) or "", m.group(3)
        labels = tuple(re.findall(LABEL, labels_text))
        assert len({k for k, _ in labels}) == len(labels), f"line {n}: a label twice"
        try:
            value = float(value_text)   # accepts +Inf, -Inf, NaN
        except ValueError:
            raise AssertionError(f"line {n}: bad value {value_text!r}") from None
        fname = family_of(name)
        assert fname not in done, f"line {n}: samples of {fname} are not contiguous"
        if current is not None and current != fname:
            done.add(current)
        current = fname
        fam = families.setdefault(fname, {"type": "untyped", "help": None, "samples": {},
                                          "typed": False})
        key = (name, labels)
        assert key not in fam["samples"], f"line {n}: series {key} twice"
        fam["samples"][key] = value
        if fam["type"] == "counter":
            assert value >= 0, f"line {n}: negative counter"
    for fname, fam in families.items():
        if fam["type"] != "histogram":
            continue
        series: dict[tuple, list[tuple[float, float]]] = {}
        for (name, labels), value in fam["samples"].items():
            if name == fname + "_bucket":
                le = dict(labels)["le"]
                rest = tuple(kv for kv in labels if kv[0] != "le")
                series.setdefault(rest, []).append((float(le), value))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{fname}{rest}: buckets not cumulative"
            assert buckets[-1][0] == float("inf"), f"{fname}{rest}: no +Inf bucket"
            assert fam["samples"][(fname + "_count", rest)] == counts[-1]
            assert (fname + "_sum", rest) in fam["samples"]
    return families


def value(families: dict, name: str, **labels: str) -> float:
    """The one sample of `name` with (at least) these labels."""
    for fam in families.values():
        for (n, lab), v in fam["samples"].items():
            if n == name and labels.items() <= dict(lab).items():
                return v
    raise KeyError(f"{name}{labels}")


def test_parser_rejects_what_is_not_the_format():
    """The parser above is strict (else the tests below could not fail)."""
    ok = "# HELP a_total x\n# TYPE a_total counter\na_total{p=\"q\"} 1\n"
    assert parse_exposition(ok)["a_total"]["samples"] == {("a_total", (("p", "q"),)): 1.0}
    bad = [ok[:-1],                                              # no final newline
           ok + "a_total{p=\"q\"} 2\n",                          # same series twice
           ok + "# TYPE b gauge\nb 1\na_total{p=\"r\"} 1\n",     # not contiguous
           "# TYPE a counter\n# TYPE a counter\na 1\n",         # TYPE twice
           "a{p=q} 1\n", "a 1 2 3\n", "a one\n", "a{p=\"\\x\"} 1\n",
           "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
           "h_sum 1\nh_count 1\n",                               # not cumulative
           "# TYPE c counter\nc -1\n", "\n"]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_exposition(text)


def test_render_buckets_and_labels():
    """In process: what is recorded is what the text says (le is "less or equal"), and
    label values are escaped."""
    from radosfs.metrics import RequestMetrics, render
    r = RequestMetrics()
    for seconds in (0.0001, 0.0002, 0.003, 40.0):
        r.record("read", seconds, 0, 'we"ird\\pool\n', 10)
    r.record("write", 0.01, errno.EDQUOT, "p", 0)
    fams = parse_exposition(render({"mount": {"name": "client.x"}, "cache": {"hits": 3,
                                    "dirty_bytes": 5}, "rados": {}}, r))
    assert value(fams, "radosfs_request_duration_seconds_bucket", op="read", le="0.0001") == 1
    assert value(fams, "radosfs_request_duration_seconds_bucket", op="read", le="0.005") == 3
    assert value(fams, "radosfs_request_duration_seconds_bucket", op="read", le="30.0") == 3
    assert value(fams, "radosfs_request_duration_seconds_bucket", op="read", le="+Inf") == 4
    assert value(fams, "radosfs_request_duration_seconds_sum", op="read") == \
        pytest.approx(40.0033)
    assert value(fams, "radosfs_request_errors_total", op="write", errno="EDQUOT") == 1
    assert value(fams, "radosfs_pool_read_bytes_total",
                 pool='we\\"ird\\\\pool\\n') == 40
    assert fams["radosfs_cache_hits_total"]["type"] == "counter"
    assert fams["radosfs_cache_dirty_bytes"]["type"] == "gauge"


# ---- metrics through a mount ------------------------------------------------------------

def radosfs_cmd(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "radosfs", *args], env=env_with_repo(),
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_prometheus_metrics_port_and_textfile(cluster, tmp_path, pool):
    prom = tmp_path / "radosfs.prom"
    mount = Mount(cluster, tmp_path / "mnt" / "m", f"metrics_port=0,metrics_file={prom}")
    try:
        port = mount.stats()["mount"]["metrics_port"]
        assert isinstance(port, int) and port > 0
        data = os.urandom(3 * MiB)
        (tmp_path / "src").write_bytes(data)
        run(["dd", f"if={tmp_path / 'src'}", f"of={mount / pool / 'f'}", "bs=1M",
             "status=none"])
        assert run(["cat", str(mount / pool / "f")]).stdout == data
        res = run(["stat", str(mount / pool / "missing")], check=False)
        assert res.returncode != 0
        status, ctype, text = scrape(port)
        assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
        fams = parse_exposition(text)
        assert fams["radosfs_request_duration_seconds"]["type"] == "histogram"
        assert value(fams, "radosfs_pool_written_bytes_total", pool=pool) == len(data)
        assert value(fams, "radosfs_pool_read_bytes_total", pool=pool) >= len(data)
        assert value(fams, "radosfs_pool_requests_total", pool=pool) >= 4
        assert value(fams, "radosfs_request_errors_total", op="lookup", errno="ENOENT") >= 1
        assert value(fams, "radosfs_request_duration_seconds_count", op="write") >= 3
        assert value(fams, "radosfs_mount_info", mountpoint=str(mount.path)) == 1
        # the same counters as the stats file (nothing touched the pool meanwhile)
        st = mount.stats()
        assert st["requests"]["pools"][pool]["bytes_written"] == len(data)
        assert st["requests"]["pools"][pool]["bytes_read"] == \
            value(fams, "radosfs_pool_read_bytes_total", pool=pool)
        assert st["requests"]["errors"]["ENOENT"] >= 1
        assert value(fams, "radosfs_cache_bytes_written_total") == \
            st["cache"]["bytes_written"] >= len(data)
        assert fams["radosfs_cache_dirty_bytes"]["type"] == "gauge"
        # and the radosfs command: nested fields as lines, where the metrics are
        lines = radosfs_cmd("stats", str(mount.path)).splitlines()
        assert f"requests.pools.{pool}.bytes_written {len(data)}" in lines
        status = radosfs_cmd("status", str(mount.path))
        assert f"http://127.0.0.1:{port}/metrics" in status and str(prom) in status
        # not the metrics: 404; a client that says nothing does not stop the others
        assert scrape(port, "/other")[0] == 404
        with socket.create_connection(("127.0.0.1", port)):
            assert scrape(port)[0] == 200
        # the textfile: rewritten (atomically) with the same families
        def textfile_counts() -> dict | None:
            try:
                f = parse_exposition(prom.read_text())
            except (OSError, AssertionError, KeyError):
                return None
            try:
                return f if value(f, "radosfs_pool_written_bytes_total", pool=pool) else None
            except KeyError:
                return None
        fams2 = wait_for(textfile_counts, 40, "metrics_file to show the write")
        assert value(fams2, "radosfs_pool_written_bytes_total", pool=pool) == len(data)
        assert not [p for p in prom.parent.iterdir() if p.name.endswith(".tmp")]
    finally:
        mount.close()
    assert not prom.exists(), "metrics_file must go with the mount"
    with pytest.raises(OSError):
        scrape(port)


def test_metrics_port_in_use_fails_the_mount(cluster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RuntimeError) as e:
            Mount(cluster, tmp_path / "m", f"metrics_port={port}")
    msg = str(e.value).splitlines()[0]
    assert f"metrics_port={port}" in msg and "Traceback" not in str(e.value)
    assert not os.path.ismount(tmp_path / "m")
    # a metrics_file that cannot be written: one line before anything is mounted
    with pytest.raises(RuntimeError) as e:
        Mount(cluster, tmp_path / "m", f"metrics_file={tmp_path / 'no-such-dir' / 'x.prom'}")
    assert "metrics_file=" in str(e.value).splitlines()[0]
    assert "writable directory" in str(e.value).splitlines()[0]
    assert not os.path.ismount(tmp_path / "m")


# ---- the admin socket ------------------------------------------------------------------

def ceph_daemon(cluster, sock: str, *cmd: str) -> dict:
    return json.loads(run(["ceph", "daemon", sock, *cmd], cluster).stdout)


def test_admin_socket_per_mount(cluster, tmp_path):
    a = Mount(cluster, tmp_path / "a" / "m")
    custom = tmp_path / "asok" / "mine.asok"
    custom.parent.mkdir()
    b = Mount(cluster, tmp_path / "b" / "m", f"admin_socket={custom}")
    c = Mount(cluster, tmp_path / "c" / "m", "admin_socket=none")
    try:
        sa = a.stats()["mount"]["admin_socket"]
        assert sa == f"/run/radosfs/ceph-client.admin.{a.stats()['mount']['pid']}.asok"
        assert os.stat("/run/radosfs").st_mode & 0o077 == 0
        assert b.stats()["mount"]["admin_socket"] == str(custom)
        assert c.stats()["mount"]["admin_socket"] is None
        assert f"admin socket {sa}" in radosfs_cmd("status", str(a.path))
        # the real ceph CLI, no ceph.conf change
        perf = ceph_daemon(cluster, sa, "perf", "dump")
        assert "objecter" in perf, sorted(perf)
        assert ceph_daemon(cluster, sa, "config", "get", "admin_socket") == \
            {"admin_socket": sa}
        assert "objecter" in ceph_daemon(cluster, str(custom), "perf", "dump")
        assert ceph_daemon(cluster, str(custom), "config", "get",
                           "rados_osd_op_timeout")["rados_osd_op_timeout"] == "30"
    finally:
        for mm in (a, b, c):
            mm.close()
    assert not os.path.exists(sa) and not custom.exists()
