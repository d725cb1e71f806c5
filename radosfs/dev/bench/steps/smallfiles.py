"""Step smallfiles: 1,000 files of 4 KiB created and written by one process, `ls -l` and
`cat` of them all through a fresh mount, against librados write_full / stat / read,
sequential and aio x32; then the same create and `cat` by 8 processes at once (125 files
each) against librados aio x8."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from ..constants import SMALL_COUNT, SMALL_DEPTH, SMALL_PROCS, SMALL_SIZE
from ..harness import Bench, say
from ..meters import timed
from ..profiling import profiled
from ..references import aio_many
from ..report import fmt_cell, fmt_ops, fmt_ratio, ratio, table

SMALL_WRITER = """
import os, sys, time
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
data = os.urandom(size)
for i in range(first, first + n):
    with open(f"{d}/f{i:04d}", "wb") as f:
        f.write(data)
"""


def parallel(cmds: list[list[str]], timeout: float) -> tuple[float, list[bytes]]:
    """Run the commands at once; (wall seconds until the last ended, their stdouts)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE) for c in cmds]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{cmds[0][:3]}... exited with {p.returncode}")
        outs.append(out)
    return time.perf_counter() - t0, outs


def run(b: Bench) -> None:
    r: dict = {"count": SMALL_COUNT, "size": SMALL_SIZE}
    b.results["smallfiles"] = r
    names = [f"f{i:04d}" for i in range(SMALL_COUNT)]
    to = 600

    m = b.mount()
    d = m / b.pool / "small"
    d.mkdir()
    say(f"{SMALL_COUNT} x 4 KiB through the mount")
    with b.cpu(m) as cpu:
        r["radosfs_write_s"], _ = timed([sys.executable, "-S", "-c", SMALL_WRITER, str(d),
                                         str(SMALL_COUNT), str(SMALL_SIZE)], to)
    r["radosfs_write_cpu"] = cpu.share
    r["stats_after_write"] = m.stats()
    d2 = m / b.pool / "small-profile"
    profiled(b, m, "small-create", [sys.executable, "-S", "-c", SMALL_WRITER, str(d2),
                                    str(SMALL_COUNT), str(SMALL_SIZE)], before=d2.mkdir)
    m = b.remount(m)
    d = m / b.pool / "small"
    with b.cpu(m) as cpu:
        dt, res = timed(f"ls -l {d} | wc -l", to, stdout=subprocess.PIPE)
    r["radosfs_stat_s"] = dt
    r["radosfs_stat_cpu"] = cpu.share
    r["ls_lines"] = int(res.stdout.split()[0])
    if r["ls_lines"] != SMALL_COUNT + 1:
        b.issue(f"ls -l of the small-file directory gave {r['ls_lines']} lines, "
                f"not {SMALL_COUNT + 1}")
    m = b.remount(m)
    d = m / b.pool / "small"
    with b.cpu(m) as cpu:
        dt, res = timed(["cat"] + [str(d / n) for n in names], to, stdout=subprocess.PIPE)
    r["radosfs_read_s"] = dt
    r["radosfs_read_cpu"] = cpu.share
    if len(res.stdout) != SMALL_COUNT * SMALL_SIZE:
        b.issue(f"cat of the small files returned {len(res.stdout)} bytes")
    r["stats_after_read"] = m.stats()
    if b.args.profile:
        m = b.remount(m)
        profiled(b, m, "small-cat", ["cat"] + [str(m / b.pool / "small" / n) for n in names])
    # The same by SMALL_PROCS processes at once, each on its share of the names.
    share = SMALL_COUNT // SMALL_PROCS
    m = b.remount(m)
    d = m / b.pool / "small-par"
    d.mkdir()
    say(f"{SMALL_COUNT} x 4 KiB through the mount, {SMALL_PROCS} processes at once")
    with b.cpu(m) as cpu:
        r["radosfs_pwrite_s"], _ = parallel(
            [[sys.executable, "-S", "-c", SMALL_WRITER, str(d), str(share), str(SMALL_SIZE),
              str(k * share)] for k in range(SMALL_PROCS)], to)
    r["radosfs_pwrite_cpu"] = cpu.share
    m = b.remount(m)
    d = m / b.pool / "small-par"
    with b.cpu(m) as cpu:
        r["radosfs_pread_s"], outs = parallel(
            [["cat"] + [str(d / n) for n in names[k * share:(k + 1) * share]]
             for k in range(SMALL_PROCS)], to)
    r["radosfs_pread_cpu"] = cpu.share
    if sum(len(o) for o in outs) != SMALL_PROCS * share * SMALL_SIZE:
        b.issue(f"parallel cat of the small files returned {sum(len(o) for o in outs)} bytes")
    b.umount(m)
    b.clean()

    # librados, sequential then aio x32 (the OSD answers both from memory: no cache to drop).
    data = os.urandom(SMALL_SIZE)
    objs = [f"small-ref/{n}" for n in names]
    say("librados sequential write_full / stat / read")
    t0 = time.perf_counter()
    for o in objs:
        b.io.write_full(o, data)
    r["seq_write_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for o in objs:
        b.io.stat(o)
    r["seq_stat_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for o in objs:
        if len(b.io.read(o, SMALL_SIZE)) != SMALL_SIZE:
            raise RuntimeError(f"short read of {o}")
    r["seq_read_s"] = time.perf_counter() - t0
    aio_many(b.io, objs, "remove", 64)
    say(f"librados aio x{SMALL_DEPTH} write_full / stat / read")
    r["aio_write_s"] = aio_many(b.io, objs, "write", SMALL_DEPTH, data)
    r["aio_stat_s"] = aio_many(b.io, objs, "stat", SMALL_DEPTH)
    r["aio_read_s"] = aio_many(b.io, objs, "read", SMALL_DEPTH, data)
    aio_many(b.io, objs, "remove", 64)
    say(f"librados aio x{SMALL_PROCS} write_full / read")
    r["paio_write_s"] = aio_many(b.io, objs, "write", SMALL_PROCS, data)
    r["paio_read_s"] = aio_many(b.io, objs, "read", SMALL_PROCS, data)
    aio_many(b.io, objs, "remove", 64)
    b.clean()

    def cell(key: str) -> str:
        return fmt_cell(r[f"{key}_s"], fmt_ops(SMALL_COUNT, r[f"{key}_s"]), r.get(f"{key}_cpu"))

    rows = []
    for k, op, ref in (("write", "create + write 4 KiB (1 process)", "write_full"),
                       ("stat", "`ls -l \\| wc -l` (fresh mount)", "stat"),
                       ("read", "`cat` all (1 process, fresh mount)", "read")):
        r[f"ratio_{k}_vs_seq"] = ratio(r[f"radosfs_{k}_s"], r[f"seq_{k}_s"])
        r[f"ratio_{k}_vs_aio"] = ratio(r[f"radosfs_{k}_s"], r[f"aio_{k}_s"])
        rows.append([op, cell(f"radosfs_{k}"), f"{ref}: {cell(f'seq_{k}')}", cell(f"aio_{k}"),
                     fmt_ratio(r[f"ratio_{k}_vs_seq"]), fmt_ratio(r[f"ratio_{k}_vs_aio"])])
    prow = []
    for k, op in (("write", f"create + write 4 KiB ({SMALL_PROCS} processes)"),
                  ("read", f"`cat` all ({SMALL_PROCS} processes, fresh mount)")):
        r[f"ratio_p{k}_vs_aio{SMALL_PROCS}"] = ratio(r[f"radosfs_p{k}_s"], r[f"paio_{k}_s"])
        prow.append([op, cell(f"radosfs_p{k}"), cell(f"paio_{k}"),
                     fmt_ratio(r[f"ratio_p{k}_vs_aio{SMALL_PROCS}"])])
    b.sections.append(
        f"### 2. {SMALL_COUNT:,} files of 4 KiB\n\n"
        "Figures are time for all files · files (or objects) per second; ratios are radosfs "
        "throughput ÷ reference. The process figures include interpreter/exec start-up.\n\n"
        + table(["operation", "radosfs", "librados sequential", f"librados aio ×{SMALL_DEPTH}",
                 "÷ seq", "÷ aio"], rows)
        + f"\n\nThe same with {SMALL_PROCS} processes at once ({share} files each):\n\n"
        + table(["operation", "radosfs", f"librados aio ×{SMALL_PROCS}", "÷ aio"], prow))
