"""Step bigfile: a --size file `cp` into the mount and `cat` back cold, against
`rados --striper put/get` and a librados aio loop; the daemon's peak RSS during the cp."""
from __future__ import annotations

import collections
import os
import subprocess
from pathlib import Path

from ..constants import BIG_DEPTH, GOAL_VS_AIO, MiB, RSS_MARGIN
from ..harness import Bench, say
from ..meters import RssSampler, drop_caches, per_gib, rss_of, timed, warm
from ..profiling import profiled
from ..references import aio_many, aio_read_objects, aio_write_file
from ..report import fmt_ratio, fmt_size, mark_ge, rate_cell, ratio, table


def run(b: Bench) -> None:
    size = b.args.size
    src: Path = b.big
    r: dict = {"bytes": size, "repeat": b.args.repeat}
    b.results["bigfile"] = r
    to = b.timeout_for(size)
    runs: dict[str, list[tuple[float, dict]]] = collections.defaultdict(list)
    rcmd = ["rados", "-c", str(b.conf), "-p", b.pool, "--striper"]
    peak = 0

    # The three ways in turn, --repeat times (interleaved, so that the machine's noise
    # spreads over all of them); the median run of each counts.
    for rep in range(b.args.repeat):
        first = rep == 0
        rep_s = f" (run {rep + 1}/{b.args.repeat})" if b.args.repeat > 1 else ""

        # radosfs: cp in (RSS sampled), cat out after remount + drop_caches.
        warm(src)
        m = b.mount()
        dst = m / b.pool / "big.bin"
        sampler = RssSampler(m.pid) if m.pid else None
        if first:
            r["rss_before_bytes"] = rss_of(m.pid) if m.pid else None
        if sampler:
            sampler.start()
        say(f"cp {size // MiB} MiB into the mount{rep_s}")
        try:
            with b.cpu(m) as cpu:
                dt, _ = timed(["cp", str(src), str(dst)], to)
            runs["radosfs_write"].append((dt, cpu.share))
            r.setdefault("radosfs_write_cpu_s_per_gib_all", []).append(
                per_gib(cpu, "radosfs", size))
        finally:
            if sampler:
                peak = max(peak, sampler.stop())
                r["rss_peak_bytes"] = peak
                r["rss_samples"] = r.get("rss_samples", 0) + sampler.samples
        if first:
            r["stats_after_cp"] = m.stats()
        st = os.stat(dst)
        if st.st_size != size:
            b.issue(f"after cp the mount shows {st.st_size} bytes, not {size}")
        if first:
            profiled(b, m, "big-cp", ["cp", str(src), str(m / b.pool / "big-profile.bin")],
                     before=lambda: warm(src))
            if b.args.profile:
                (m / b.pool / "big-profile.bin").unlink()
        m = b.remount(m)
        say(f"cat it back (cold){rep_s}")
        with b.cpu(m) as cpu:
            dt, _ = timed(["cat", str(dst)], to)
        runs["radosfs_read"].append((dt, cpu.share))
        r.setdefault("radosfs_read_cpu_s_per_gib_all", []).append(per_gib(cpu, "radosfs", size))
        if first:
            r["stats_after_cat"] = m.stats()
        if first and not b.args.no_verify:
            res = subprocess.run(["cmp", str(src), str(dst)], capture_output=True, timeout=to,
                                 check=False)
            r["verified"] = res.returncode == 0
            if res.returncode != 0:
                b.issue(f"data read back through the mount differs: "
                        f"{res.stdout.decode().strip()}")
        if first and b.args.profile:
            m = b.remount(m)
            profiled(b, m, "big-cat", ["cat", str(m / b.pool / "big.bin")])
        dst.unlink()
        b.umount(m)
        b.clean()

        # rados --striper put/get (same pool).
        warm(src)
        say(f"rados --striper put/get{rep_s}")
        with b.cpu() as cpu:
            dt, _ = timed(rcmd + ["put", "big.bin", str(src)], to)
        runs["striper_write"].append((dt, cpu.share))
        drop_caches()
        with b.cpu() as cpu:
            dt, _ = timed(rcmd + ["get", "big.bin", "-"], to)
        runs["striper_read"].append((dt, cpu.share))
        timed(rcmd + ["rm", "big.bin"], to)
        b.clean()

        # librados aio loop, 16 x 4 MiB in flight.
        warm(src)
        say(f"librados aio x{BIG_DEPTH} write/read of 4 MiB objects{rep_s}")
        with b.cpu(client="self") as cpu:
            dt, count = aio_write_file(b.io, src, "aio-big", BIG_DEPTH)
        runs["aio_write"].append((dt, cpu.share))
        drop_caches()
        with b.cpu(client="self") as cpu:
            dt, nread = aio_read_objects(b.io, "aio-big", count, BIG_DEPTH)
        runs["aio_read"].append((dt, cpu.share))
        if nread != size:
            b.issue(f"aio read returned {nread} bytes, not {size}")
        aio_many(b.io, [f"aio-big.{i:06d}" for i in range(count)], "remove", 64)
        b.clean()

    for key, vals in runs.items():
        ordered = sorted(vals, key=lambda v: v[0])
        dt, cpu = ordered[(len(ordered) - 1) // 2]     # the median run (lower median)
        r[f"{key}_s"] = dt
        r[f"{key}_cpu"] = cpu
        r[f"{key}_all_s"] = [v[0] for v in vals]

    for k in ("write", "read"):
        vals = sorted(v for v in r.get(f"radosfs_{k}_cpu_s_per_gib_all", []) if v is not None)
        r[f"radosfs_{k}_cpu_s_per_gib"] = vals[(len(vals) - 1) // 2] if vals else None
    r["ratio_write_vs_aio"] = ratio(r["radosfs_write_s"], r["aio_write_s"])
    r["ratio_read_vs_aio"] = ratio(r["radosfs_read_s"], r["aio_read_s"])
    r["ratio_write_vs_striper"] = ratio(r["radosfs_write_s"], r["striper_write_s"])
    r["ratio_read_vs_striper"] = ratio(r["radosfs_read_s"], r["striper_read_s"])
    r["rss_limit_bytes"] = b.cache_size + RSS_MARGIN
    peak = r.get("rss_peak_bytes")
    r["rss_ok"] = None if not peak else peak < r["rss_limit_bytes"]

    def row(k: str) -> list[str]:
        rat = r[f"ratio_{k}_vs_aio"]
        goal = GOAL_VS_AIO[k]
        return [f"{k} {fmt_size(size)}", rate_cell(r, f"radosfs_{k}", size),
                rate_cell(r, f"striper_{k}", size), rate_cell(r, f"aio_{k}", size),
                fmt_ratio(r[f"ratio_{k}_vs_striper"]), fmt_ratio(rat),
                f"≥ {goal} {mark_ge(rat, goal)}"]

    b.sections.append(
        f"### 1. One {size / MiB:,.0f} MiB file\n\n"
        "radosfs: `cp` into the mount (cp process, close included); `cat` > /dev/null after "
        "unmount + remount + drop_caches. Ratios are radosfs throughput ÷ reference. CPU is "
        "each process's CPU time ÷ wall time (100% = one core busy throughout): `client` is "
        "cp/cat, the rados CLI or the benchmark's own aio loop; `machine` is "
        f"every process on the machine ({(os.cpu_count() or 1) * 100}% = all cores busy)"
        + (f"; median of {b.args.repeat} runs" if b.args.repeat > 1 else "") + ".\n\n"
        + table(["operation", "radosfs cp / cat", "rados --striper put / get",
                 f"librados aio ×{BIG_DEPTH} (4 MiB objects)", "÷ striper", "÷ aio", "target"],
                [row("write"), row("read")]))
