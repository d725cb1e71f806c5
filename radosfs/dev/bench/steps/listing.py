"""Step listing: `ls -l | wc -l` of a pool of 10,000 objects (made with librados aio)
through a fresh mount, against librados list_objects + aio stat."""
from __future__ import annotations

import subprocess
import time

from ..constants import LIST_COUNT, SMALL_DEPTH
from ..harness import Bench, say
from ..meters import rss_of, timed
from ..profiling import profiled
from ..references import aio_many
from ..report import ratio


def run(b: Bench) -> None:
    r: dict = {"count": LIST_COUNT}
    b.results["listing"] = r
    names = [f"obj-{i:05d}" for i in range(LIST_COUNT)]
    with b.filled_pool("list", names, b"x" * 100, r) as (pool, io):
        t0 = time.perf_counter()
        n = sum(1 for _ in io.list_objects())
        r["librados_list_s"] = time.perf_counter() - t0
        if n != LIST_COUNT:
            b.issue(f"list_objects gave {n} objects, not {LIST_COUNT}")
        t0 = time.perf_counter()
        aio_many(io, names, "stat", SMALL_DEPTH)
        r["librados_stat_s"] = time.perf_counter() - t0
        m = b.mount()
        try:
            say("ls -l | wc -l through a fresh mount")
            cmd = f"ls -l {m / pool} | wc -l"
            with b.cpu(m) as cpu:
                r["radosfs_ls_s"], res = timed(cmd, 300, stdout=subprocess.PIPE)
            r["radosfs_ls_cpu"] = cpu.share
            r["ls_lines"] = int(res.stdout.split()[0])
            r["radosfs_ls_again_s"], _ = timed(cmd, 300, stdout=subprocess.PIPE)
            r["stats"] = m.stats()
            r["rss_after_bytes"] = rss_of(m.pid) if m.pid else None
            if b.args.profile:
                m = b.remount(m)
                profiled(b, m, "ls-10k", cmd)
        finally:
            b.umount(m)
        if r["ls_lines"] != LIST_COUNT + 1:
            b.issue(f"ls -l of the 10,000-object pool gave {r['ls_lines']} lines, "
                    f"not {LIST_COUNT + 1}")
    r["ok"] = r["radosfs_ls_s"] < 2.0
    r["ratio_vs_list_plus_aio_stat"] = ratio(r["radosfs_ls_s"],
                                             r["librados_list_s"] + r["librados_stat_s"])
