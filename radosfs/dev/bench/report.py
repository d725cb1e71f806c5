"""The output: figures formatted for the markdown report (also the steps' own tables), the
targets table, the whole report, and the JSON document."""
from __future__ import annotations

import time

from .constants import (FIND_COUNT, FIO_GOAL_VS_RBD_ENGINE, FIO_GOAL_VS_RBDFUSE, GOAL_VS_AIO,
                        GiB, LIST_COUNT, MiB, REREAD_SIZE, RSS_MARGIN)
from .harness import Bench
from .meters import loadavg

# ---------------------------------------------------------------------------- formatting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "n/a"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def mib_s(nbytes: int, s: float | None) -> float | None:
    return nbytes / MiB / s if s else None


def fmt_rate(nbytes: int, s: float | None) -> str:
    r = mib_s(nbytes, s)
    return "n/a" if r is None else f"{r:,.0f} MiB/s"


def fmt_ops(n: int, s: float | None) -> str:
    return "n/a" if not s else f"{n / s:,.0f}/s"


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def fmt_size(nbytes: int) -> str:
    """'1 GiB', '1.5 GiB' from 1 GiB up, else '64 MiB'."""
    return f"{nbytes / GiB:g} GiB" if nbytes >= GiB else f"{nbytes // MiB} MiB"


def fmt_cpu(share: dict | None) -> str:
    """A CpuMeter's shares: 'client 12%, radosfs 85%, osd 40%, machine 150%'."""
    return ", ".join(f"{n} {v:.0%}" for n, v in (share or {}).items())


def fmt_cell(seconds: float | None, rate: str, share: dict | None = None) -> str:
    """'1.23 s · 830 MiB/s (CPU: …)': a time, its rate, the CPU shares if any."""
    cpu = fmt_cpu(share)
    return f"{fmt_time(seconds)} · {rate}" + (f" (CPU: {cpu})" if cpu else "")


def rate_cell(r: dict, key: str, nbytes: int) -> str:
    """fmt_cell of r[key_s] for moving `nbytes`, with the CPU shares r[key_cpu]."""
    s = r.get(f"{key}_s")
    return fmt_cell(s, fmt_rate(nbytes, s), r.get(f"{key}_cpu"))


def ratio(ours: float | None, ref: float | None) -> float | None:
    """Throughput ratio radosfs / reference from two durations of the same work."""
    return ref / ours if ours and ref else None


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("✓ met" if ok else "✗ missed")


def mark_ge(x: float | None, goal: float) -> str:
    """mark() of x ≥ goal ('n/a' without x)."""
    return mark(None if x is None else x >= goal)


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------- report

def targets_section(b: Bench) -> str:
    """The targets, from whatever results exist (a failed or interrupted step leaves
    some out)."""
    rows = []
    big = b.results.get("bigfile", {})
    for k, what in (("write", "radosfs write ÷ librados aio write"),
                    ("read", "radosfs read ÷ librados aio read")):
        goal = GOAL_VS_AIO[k]
        rat = ratio(big.get(f"radosfs_{k}_s"), big.get(f"aio_{k}_s"))
        if big.get(f"radosfs_{k}_s"):
            rows.append([what, fmt_ratio(rat), f"≥ {goal:g}", mark_ge(rat, goal)])
    lst = b.results.get("listing", {})
    if lst.get("radosfs_ls_s"):
        rows.append([f"`ls -l \\| wc -l` of {LIST_COUNT:,} objects, fresh mount",
                     f"{fmt_time(lst['radosfs_ls_s'])} ({lst.get('ls_lines', 0):,} lines; "
                     f"again: {fmt_time(lst.get('radosfs_ls_again_s'))}; librados list "
                     f"{fmt_time(lst.get('librados_list_s'))} + aio stat "
                     f"{fmt_time(lst.get('librados_stat_s'))}; CPU: "
                     f"{fmt_cpu(lst.get('radosfs_ls_cpu'))})",
                     "< 0.7 s", mark(lst["radosfs_ls_s"] < 0.7)])
    fd = b.results.get("find", {})
    if fd.get("radosfs_find_s"):
        after = fd.get("rss_after_find_bytes")
        forgot = fd.get("rss_after_forget_bytes")
        rows.append([f"daemon RSS after `find` over {FIND_COUNT:,} objects (fresh mount)",
                     f"{(after or 0) / MiB:,.0f} MiB (find {fmt_time(fd['radosfs_find_s'])}, "
                     f"{fd.get('find_lines', 0):,} lines; peak "
                     f"{(fd.get('rss_peak_bytes') or 0) / MiB:,.0f} MiB; before "
                     f"{(fd.get('rss_before_bytes') or 0) / MiB:,.0f} MiB; inodes held "
                     f"{fd.get('inodes_after_find')} → {fd.get('inodes_after_forget')} after "
                     f"drop_caches (forget), RSS then {(forgot or 0) / MiB:,.0f} MiB; CPU: "
                     f"{fmt_cpu(fd.get('radosfs_find_cpu'))})",
                     f"≤ {(b.cache_size + RSS_MARGIN) / MiB:,.0f} MiB (cache_size + 150)",
                     mark(fd.get("rss_ok"))])
    for k, what in (("write", "in (`cp`)"), ("read", "out (cold `cat`)")):
        s, share = big.get(f"radosfs_{k}_s"), (big.get(f"radosfs_{k}_cpu") or {})
        if s and share.get("radosfs") is not None:
            per_gib = s * share["radosfs"] / (b.args.size / GiB)
            big[f"radosfs_{k}_cpu_s_per_gib"] = round(per_gib, 2)
            rows.append([f"daemon CPU seconds per GiB copied {what}", f"{per_gib:.2f} s",
                         "recorded", "n/a"])
    rr = b.results.get("reread", {})
    if rr.get("second_read_s"):
        gbps = REREAD_SIZE / 1e9 / rr["second_read_s"]
        rows.append(["re-read of a cached 256 MiB file (2nd `cat`)",
                     f"{fmt_time(rr['second_read_s'])} · {gbps:.2f} GB/s "
                     f"(1st read {fmt_rate(REREAD_SIZE, rr.get('first_read_s'))}; from the "
                     f"daemon's cache after drop_caches "
                     f"{fmt_rate(REREAD_SIZE, rr.get('daemon_cache_read_s'))}; cp in "
                     f"{fmt_rate(REREAD_SIZE, rr.get('write_s'))})",
                     "≥ 1 GB/s", mark(gbps >= 1.0)])
    if big.get("rss_peak_bytes"):
        limit = b.cache_size + RSS_MARGIN
        rows.append([f"peak RSS of the radosfs daemon during the {b.args.size // MiB} MiB cp",
                     f"{big['rss_peak_bytes'] / MiB:,.0f} MiB (before cp "
                     f"{(big.get('rss_before_bytes') or 0) / MiB:,.0f} MiB; "
                     f"{big.get('rss_samples', 0)} samples)",
                     f"< {limit / MiB:,.0f} MiB (cache_size {b.cache_size / MiB:,.0f} MiB + 150)",
                     mark(big["rss_peak_bytes"] < limit)])
    rb = b.results.get("rbd", {})
    for k in ("write", "read"):
        for ref, label, goal in (("rbdfuse", "rbd-fuse", 1.0),
                                 ("librbd", "librbd aio loop", GOAL_VS_AIO[k])):
            pre, new = rb.get(f"ratio_pre_{k}_vs_{ref}"), rb.get(f"ratio_new_{k}_vs_{ref}")
            if pre is None and new is None:
                continue
            rows.append([f"RBD image {k}: radosfs ÷ {label} (pre-created image; "
                         f"file created by dd)",
                         f"{fmt_ratio(pre)}; {fmt_ratio(new)}", f"≥ {goal:g}",
                         f"{mark_ge(pre, goal)}; {mark_ge(new, goal)}"])
    cost = []
    for label, res, keys in (("cp in / cat out", big, ("radosfs_write", "radosfs_read")),
                             ("RBD dd write / read, pre-created image", rb,
                              ("radosfs_pre_write", "radosfs_pre_read"))):
        vals = [res.get(f"{k}_cpu_s_per_gib") for k in keys]
        if any(v is not None for v in vals):
            cost.append(f"{label}: " + " / ".join("n/a" if v is None else f"{v:.2f}"
                                                  for v in vals))
    if cost:
        rows.append(["radosfs daemon CPU seconds per GiB (/proc/PID/stat, all its threads)",
                     "; ".join(cost), "recorded, falling", "—"])
    fio = b.results.get("fio", {})
    for rw in ("randread", "randwrite"):
        a, c = fio.get(f"ratio_{rw}_vs_rbdfuse"), fio.get(f"ratio_{rw}_vs_fio_rbd")
        if a is None and c is None:
            continue
        ours = (fio.get(f"radosfs_{rw}") or {}).get("iops")
        rows.append([f"fio 4 KiB {rw} QD 16 on an image file: radosfs ÷ rbd-fuse; "
                     "÷ fio's rbd engine", f"{fmt_ratio(a)}; {fmt_ratio(c)} "
                     f"({ours or 0:,.0f} IOPS)",
                     f"≥ {FIO_GOAL_VS_RBDFUSE}; ≥ {FIO_GOAL_VS_RBD_ENGINE}",
                     f"{mark_ge(a, FIO_GOAL_VS_RBDFUSE)}; {mark_ge(c, FIO_GOAL_VS_RBD_ENGINE)}"])
    if not rows:
        return ""
    return ("### Targets (recorded, not asserted)\n\n"
            + table(["measure", "result", "target", "met"], rows))


def report(b: Bench, info: dict, started: float, failed: dict, interrupted: bool) -> str:
    out = [f"## radosfs benchmark — {info['date']}", "",
           f"- machine: {info['nproc']} CPUs, {info['cpu']}, "
           f"{info['ram_bytes'] / GiB:.1f} GiB RAM, kernel {info['kernel']}, "
           f"load average at start {info['loadavg_start']}, at end {loadavg()}",
           f"- {info['ceph']}; Python {info['python']}",
           f"- radosfs at `{info['git']}`"
           + (f" + {info['radosfs_uncommitted']} uncommitted file(s) in radosfs/"
              if info['radosfs_uncommitted'] else ""),
           f"- store: {b.args.store_label}; pool `{b.pool}` ({b.pool_desc}); "
           f"mount options `{b.mount_opts or '(defaults)'}`, cache_size "
           f"{b.cache_size / MiB:,.0f} MiB",
           f"- file size {b.args.size / MiB:,.0f} MiB; run took {time.monotonic() - started:.0f} s",
           ""]
    tgt = targets_section(b)
    if tgt:
        out += [tgt, ""]
    for s in b.sections:
        out += [s, ""]
    for label, prof in b.results.get("profiles", {}).items():
        if not prof.get("self"):
            continue
        out += [f"### py-spy, daemon, during an extra untimed run of {label}: "
                f"{prof['samples']} samples (non-idle), run took "
                f"{fmt_time(prof.get('seconds_while_profiled'))}", "",
                table(["function, by self time", "%", "radosfs function, by total time", "%"],
                      [[f"`{a[0]}`", f"{a[2]}", f"`{t[0]}`", f"{t[2]}"]
                       for a, t in zip(prof["self"][:12], prof["total"][:12])]), ""]
    notes = ["- **interrupted**: the run did not finish"] if interrupted else []
    try:
        load1 = float(info["loadavg_start"].split()[0])
    except (ValueError, IndexError):
        load1 = 0.0
    if load1 >= (info["nproc"] or 1):
        notes.append(f"- the machine was busy at the start (load average {load1:.1f} on "
                     f"{info['nproc']} CPUs): figures are lower and noisier than on an idle one "
                     f"(see `machine` CPU; --repeat N reports medians)")
    for name, err in failed.items():
        notes.append(f"- step **{name}** failed: {err}")
    for i in b.issues:
        notes.append(f"- {i}")
    for i in b.log_issues:
        notes.append(f"- mount log {i}")
    for key, label in (("bigfile", "after cp"), ("smallfiles", "after write")):
        st = b.results.get(key, {}).get("stats_after_cp" if key == "bigfile"
                                       else "stats_after_write")
        if st and "cache" in st:
            errs = st["cache"].get("writeback_errors", 0) + st.get("rados", {}).get("errors", 0)
            if errs:
                notes.append(f"- {key} {label}: {errs} write-back/rados errors in .radosfs-stats")
    out += ["### Notes", ""] + (notes or ["- none: no step failed, no warnings in mount logs"])
    return "\n".join(out)


def json_doc(b: Bench, info: dict, started: float, failed: dict, interrupted: bool) -> dict:
    """What --json writes: the machine, the setup, every raw figure and every note."""
    return {"machine": info, "store": b.args.store_label, "size": b.args.size,
            "cache_size": b.cache_size, "mount_options": b.mount_opts,
            "results": b.results, "failed": failed, "issues": b.issues,
            "mount_log_issues": b.log_issues, "interrupted": interrupted,
            "seconds": time.monotonic() - started}

