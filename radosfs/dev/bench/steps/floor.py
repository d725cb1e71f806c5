"""Step floor: the small-file create and `cat` of step smallfiles, through an in-memory
pyfuse3 + trio filesystem (`nullfs`) instead of radosfs -- what FUSE, pyfuse3 and trio
cost per file on this machine, against which radosfs' own cost per file shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from radosfs.dev.mount_process import fusermount

from ..constants import SMALL_COUNT, SMALL_SIZE
from ..harness import Bench, say
from ..meters import CpuMeter, timed
from ..report import fmt_cell, fmt_ops, table
from .smallfiles import SMALL_WRITER


def run(b: Bench) -> None:
    r: dict = {"count": SMALL_COUNT, "size": SMALL_SIZE}
    b.results["floor"] = r
    mnt = b.tmp / "nullfs"
    mnt.mkdir(exist_ok=True)
    counts_path = b.tmp / "nullfs-counts.json"
    proc = subprocess.Popen([sys.executable, "-m", "radosfs.dev.bench.nullfs", str(mnt),
                             str(counts_path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nullfs did not mount: "
                                   + (proc.stderr.read().decode(errors="replace")
                                      if proc.poll() is not None else "timed out"))
            time.sleep(0.05)
        names = [f"f{i:04d}" for i in range(SMALL_COUNT)]
        say(f"{SMALL_COUNT} x 4 KiB through nullfs (in-memory pyfuse3 + trio)")
        with CpuMeter("children", nullfs=proc.pid) as cpu:
            r["write_s"], _ = timed([sys.executable, "-S", "-c", SMALL_WRITER, str(mnt),
                                     str(SMALL_COUNT), str(SMALL_SIZE)], 600)
        r["write_cpu"], r["write_daemon_s"] = cpu.share, cpu.seconds.get("nullfs")
        b.drop_kernel_caches()
        with CpuMeter("children", nullfs=proc.pid) as cpu:
            r["read_s"], res = timed(["cat"] + [str(mnt / n) for n in names], 600,
                                     stdout=subprocess.PIPE)
        r["read_cpu"], r["read_daemon_s"] = cpu.share, cpu.seconds.get("nullfs")
        if len(res.stdout) != SMALL_COUNT * SMALL_SIZE:
            b.issue(f"floor: cat through nullfs returned {len(res.stdout)} bytes")
    finally:
        fusermount(mnt, 30, b.issue, "nullfs at ")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        r["requests"] = json.loads(counts_path.read_text())
    except (OSError, ValueError):
        r["requests"] = {}

    small = b.results.get("smallfiles", {})
    rows = []
    for k, op in (("write", "create + write 4 KiB (1 process)"),
                  ("read", "`cat` all (1 process, after drop_caches)")):
        ours = small.get(f"radosfs_{k}_s")
        ours_cpu = (small.get(f"radosfs_{k}_cpu") or {}).get("radosfs")
        per_file = lambda s: f"{s / SMALL_COUNT * 1000:.2f} ms" if s else "—"  # noqa: E731
        rows.append([op, fmt_cell(r[f"{k}_s"], fmt_ops(SMALL_COUNT, r[f"{k}_s"]),
                                  r[f"{k}_cpu"]),
                     per_file(r.get(f"{k}_daemon_s")),
                     per_file(ours * ours_cpu if ours and ours_cpu else None)])
    req = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests"].items()))
    b.sections.append(
        f"### 2b. The floor: {SMALL_COUNT:,} files of 4 KiB through an in-memory FUSE "
        "filesystem\n\n"
        "`nullfs` (radosfs/dev/bench/nullfs.py) is pyfuse3 + trio answering every request "
        "at once from memory, with radosfs' libfuse options and reply flags: what FUSE, "
        "pyfuse3 and trio cost per file here. Daemon CPU per file is its CPU time ÷ "
        f"{SMALL_COUNT:,}; radosfs' is from step smallfiles of this run (a fresh mount "
        f"there). Requests nullfs answered: {req or '—'}.\n\n"
        + table(["operation", "nullfs", "nullfs daemon CPU / file",
                 "radosfs daemon CPU / file"], rows))
