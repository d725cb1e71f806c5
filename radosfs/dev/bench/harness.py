"""The harness: the Bench object the steps work with (mounts, pools, CPU meters, notes),
the run loop over the steps, and the cleanup that always runs."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import rados

from radosfs.dev.cluster import LocalCluster
from radosfs.dev.mount_process import MountProcess

from .constants import MiB, REREAD_SIZE
from .meters import CpuMeter, drop_caches, loadavg, rss_of
from .references import RbdFuse, aio_many, clear_pool


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Step:
    name: str
    title: str
    run: Callable[["Bench"], None]
    enabled: Callable[[argparse.Namespace], bool] = lambda args: True


class BenchMount(MountProcess):
    """radosfs mounted with the real mount command, plus what the steps read from it."""

    cpu_label = "radosfs"       # its name among the CPU shares (Bench.cpu)

    def stats(self) -> dict:
        """As MountProcess.stats, but a step's report goes on without them."""
        try:
            return super().stats()
        except (OSError, ValueError) as exc:
            return {"error": repr(exc)}


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    conf: Path
    rados: rados.Rados
    pool: str
    io: rados.Ioctx
    mount_opts: str
    cache_size: int
    cluster: LocalCluster | None = None
    big: Path | None = None               # the --size file of random data
    reread_src: Path | None = None        # a REREAD_SIZE file (its start)
    results: dict = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    log_issues: list[str] = field(default_factory=list)
    mounts: list[BenchMount] = field(default_factory=list)
    extra_pools: list[str] = field(default_factory=list)
    fuse_mounts: list[RbdFuse] = field(default_factory=list)      # step rbd
    pool_desc: str = "?"
    _n: int = 0

    # -- helpers used by the steps

    @property
    def mnt(self) -> Path:
        return self.tmp / "mnt"

    def mount(self) -> BenchMount:
        self._n += 1
        m = BenchMount(self.mnt, self.conf, self.mount_opts,
                       log=self.tmp / f"mount-{self._n}.log", complain=self.issue)
        self.mounts.append(m)
        return m

    def umount(self, m: BenchMount) -> None:
        try:
            m.close()
            self.scan_log(m)
        finally:
            if m in self.mounts:
                self.mounts.remove(m)

    def rbd_fuse(self, pool: str, path: Path, log: Path) -> RbdFuse:
        """rbd-fuse on `pool` at `path`; close it with close_fuse() (cleanup() does too)."""
        fm = RbdFuse(self.conf, pool, path, log, self.env(), self.issue, self.log_issues.append)
        self.fuse_mounts.append(fm)
        return fm

    def close_fuse(self, fm: RbdFuse, lazy: bool = False) -> None:
        try:
            fm.close(lazy=lazy)
        finally:
            if fm in self.fuse_mounts:
                self.fuse_mounts.remove(fm)

    def remount(self, m: BenchMount, drop: bool = True) -> BenchMount:
        """Unmount, drop the kernel's caches, mount again: nothing cached anywhere."""
        self.umount(m)
        if drop:
            self.drop_kernel_caches()
        return self.mount()

    def drop_kernel_caches(self) -> None:
        if not drop_caches():
            self.issue("could not write /proc/sys/vm/drop_caches (not root?): "
                       "kernel caches not dropped")

    def issue(self, msg: str) -> None:
        say(f"note: {msg}")
        self.issues.append(msg)

    def scan_log(self, m: BenchMount) -> None:
        text = m.read_log()
        bad = [ln for ln in text.splitlines()
               if re.search(r" (ERROR|WARNING|CRITICAL) |Traceback|Exception", ln)]
        if bad:
            self.log_issues.append(f"{m.log.name}: {len(bad)} warning/error lines, e.g. "
                                   + " || ".join(b[:300] for b in bad[:3]))
        if "unmounted" not in text:
            self.log_issues.append(f"{m.log.name}: no 'unmounted' line (daemon did not finish)")
        elif "after an error" in text:
            self.log_issues.append(f"{m.log.name}: unmounted after an error")

    def new_pool(self, suffix: str) -> tuple[str, rados.Ioctx]:
        name = f"{self.pool}-{suffix}"
        self.rados.create_pool(name)
        self.extra_pools.append(name)
        app_enable(self.rados, name)
        return name, self.rados.open_ioctx(name)

    @contextlib.contextmanager
    def filled_pool(self, suffix: str, names: list[str], body: bytes, r: dict
                    ) -> Iterator[tuple[str, rados.Ioctx]]:
        """A new pool holding `names`, each `body` (made with librados aio; the time in
        r["create_s"]); the pool and its objects are deleted afterwards."""
        pool, io = self.new_pool(suffix)
        try:
            say(f"creating {len(names):,} objects in {pool} with librados aio")
            r["create_s"] = aio_many(io, names, "write", 64, body)
            yield pool, io
        finally:
            io.close()
            self.delete_pool(pool)

    def delete_pool(self, name: str) -> None:
        try:
            self.rados.delete_pool(name)
        except rados.Error as exc:
            self.issue(f"could not delete pool {name}: {exc}")
            return
        if name in self.extra_pools:
            self.extra_pools.remove(name)

    def describe_pool(self, pool: str | None = None) -> str:
        """'8 PGs, size 1' for the benchmark pool (or `pool`), from the mon."""
        out = []
        for var, fmt in (("pg_num", "{} PGs"), ("size", "size {}")):
            try:
                ret, buf, _ = self.rados.mon_command(json.dumps(
                    {"prefix": "osd pool get", "pool": pool or self.pool, "var": var,
                     "format": "json"}), b"", timeout=10)
                if ret == 0:
                    out.append(fmt.format(json.loads(buf)[var]))
            except (rados.Error, ValueError, KeyError):
                pass
        return ", ".join(out) or "?"

    def clean(self) -> None:
        n = clear_pool(self.io)
        if n:
            say(f"removed {n} leftover objects from {self.pool}")

    def env(self) -> dict:
        env = dict(os.environ)
        env["CEPH_CONF"] = str(self.conf)
        return env

    def timeout_for(self, nbytes: int) -> float:
        return max(120.0, nbytes / (4 * MiB))   # ~4 MiB/s would be a hang, not a result

    def osd_pid(self) -> int | None:
        if self.cluster is None:
            return None
        try:
            return int((self.cluster.directory / "run" / "ceph-osd.0.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def osd_rss(self) -> int | None:
        pid = self.osd_pid()
        return rss_of(pid) if pid else None

    def cpu(self, m: BenchMount | RbdFuse | None = None, client: str = "children") -> CpuMeter:
        """CPU shares over a `with` block: the client (the commands we run, or this process
        for the librados loops), the FUSE daemon (radosfs, or rbd-fuse, if m), the OSD, the
        whole machine."""
        return CpuMeter(client, **{m.cpu_label if m else "radosfs": m.pid if m else None,
                                   "osd": self.osd_pid()})


def app_enable(r: rados.Rados, pool: str) -> None:
    cmd = json.dumps({"prefix": "osd pool application enable", "pool": pool, "app": "bench",
                      "yes_i_really_mean_it": True})
    r.mon_command(cmd, b"", timeout=30)


def make_data(tmp: Path, size: int) -> tuple[Path, Path]:
    """The big file (from /dev/urandom) and a 256 MiB file (its start, or random if larger)."""
    big = tmp / "data" / "big.bin"
    big.parent.mkdir()
    with open("/dev/urandom", "rb", buffering=0) as src, open(big, "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 16 * MiB))
            dst.write(chunk)
            left -= len(chunk)
    small = tmp / "data" / "reread.bin"
    with open(big, "rb") as src, open(small, "wb") as dst:
        left = REREAD_SIZE
        while left:
            chunk = src.read(min(left, 16 * MiB)) or os.urandom(min(left, 16 * MiB))
            dst.write(chunk)
            left -= len(chunk)
    return big, small


# ---------------------------------------------------------------------------- the run

def run_steps(b: Bench, steps: list[Step], failed: dict[str, str]) -> None:
    """Run the steps asked for, in order; a step that fails is recorded in `failed` and the
    next one runs. After each: its mounts unmounted, the pool emptied, a few figures."""
    for step in steps:
        if step.name not in b.args.step_names or not step.enabled(b.args):
            continue
        say(f"== {step.name}: {step.title}")
        t0 = time.monotonic()
        try:
            step.run(b)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # record and go on with the next step
            failed[step.name] = f"{type(exc).__name__}: {exc}"
            say(f"step {step.name} failed:\n{traceback.format_exc()}")
        finally:
            for m in list(b.mounts):
                b.umount(m)
            try:
                b.clean()
            except rados.Error as exc:
                b.issue(f"cleaning the pool after {step.name} failed: {exc}")
        b.results.setdefault(step.name, {})["step_seconds"] = time.monotonic() - t0
        b.results[step.name]["osd_rss_after_bytes"] = b.osd_rss()
        b.results[step.name]["loadavg_after"] = loadavg()


def cleanup(b: Bench | None, handle, cluster: LocalCluster | None, tmp: Path,
            keep: bool) -> None:
    """Unmount everything, drop our pools (on a foreign cluster), stop our cluster."""
    if b is not None:
        for m in list(b.mounts):
            try:
                b.umount(m)
            except Exception as exc:  # noqa: BLE001 -- go on cleaning
                say(f"unmount of {m.path} failed: {exc}")
    if b is not None:
        for fm in list(b.fuse_mounts):
            try:
                b.close_fuse(fm, lazy=True)
            except Exception as exc:  # noqa: BLE001 -- go on cleaning
                say(f"unmount of rbd-fuse {fm.path} failed: {exc}")
    mnt = tmp / "mnt"
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)
    if handle is not None:
        if cluster is None and b is not None:  # someone else's cluster: remove our pools
            for pool in [b.pool] + b.extra_pools:
                try:
                    handle.delete_pool(pool)
                except rados.Error as exc:
                    say(f"could not delete pool {pool}: {exc} (remove it by hand)")
        try:
            handle.shutdown()
        except Exception:  # noqa: BLE001
            pass
    if cluster is not None:
        say("stopping the cluster")
        try:
            cluster.stop()
        except Exception as exc:  # noqa: BLE001
            say(f"stopping the cluster failed: {exc}")
    # The data (a --size file) and the cluster's stores go always; the logs (mount, ceph)
    # and py-spy output stay when asked for or when there is something to look at.
    for sub in ("data", "cluster/osd", "cluster/mon", "cluster/mgr"):
        shutil.rmtree(tmp / sub, ignore_errors=True)
    if keep:
        say(f"kept the logs in {tmp}")
    elif b is not None and (b.issues or b.log_issues):
        say(f"kept the logs in {tmp} (there were notes)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
