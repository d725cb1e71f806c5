"""Step rbd: a --size image in an image pool, `dd` through the mount (into a new file and
into a pre-created image) and back cold, against rbd-fuse on the same pool and a Python
librbd aio loop."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import rados
import rbd as rbd_mod

from ..constants import BIG_DEPTH, GOAL_VS_AIO, MiB
from ..harness import Bench, say
from ..meters import per_gib, timed, warm
from ..references import librbd_loop, remove_images
from ..report import fmt_ratio, fmt_size, mark_ge, rate_cell, ratio, table


def rbd_cli(b: Bench, *args: str, timeout: float = 120) -> None:
    """`ceph`/`rbd` command against the bench's cluster (the pool setup the issue gives)."""
    timed([args[0], "-c", str(b.conf), *args[1:]], timeout, env=b.env())


def run(b: Bench) -> None:
    size = b.args.size
    if size % MiB:
        raise RuntimeError("the RBD step needs --size in whole MiB")
    src: Path = b.big
    r: dict = {"bytes": size}
    b.results["rbd"] = r
    to = b.timeout_for(size)
    verify = not b.args.no_verify
    pool = f"{b.pool}-rbd"
    dd_w = ["dd", f"if={src}", "bs=4M"]

    def dd_write(dst: Path, precreated: bool) -> list[str]:
        return dd_w + [f"of={dst}", "conv=notrunc,fsync" if precreated else "conv=fsync"]

    def dd_read(path: Path) -> list[str]:
        return ["dd", f"if={path}", "of=/dev/null", "bs=4M"]

    def check(path: Path, what: str) -> None:
        st = os.stat(path)
        if st.st_size != size:
            b.issue(f"rbd {what}: the file shows {st.st_size} bytes, not {size}")
        if verify:
            t0 = time.perf_counter()
            res = subprocess.run(["cmp", str(src), str(path)], capture_output=True,
                                 timeout=to, check=False)
            r.setdefault("verify_s", {})[what] = time.perf_counter() - t0
            r.setdefault("verified", {})[what] = res.returncode == 0
            if res.returncode != 0:
                b.issue(f"rbd {what}: data read back differs from what was written: "
                        f"{(res.stdout or res.stderr).decode(errors='replace').strip()}")

    say(f"creating image pool {pool} (ceph osd pool create {pool} 32; rbd pool init)")
    b.extra_pools.append(pool)
    rbd_cli(b, "ceph", "osd", "pool", "create", pool, "32")
    rbd_cli(b, "rbd", "pool", "init", pool)
    r["pool"] = pool
    r["pool_desc"] = b.describe_pool(pool)
    io = b.rados.open_ioctx(pool)
    try:
        # radosfs, in two variants: dd creates the file (a 0-byte image grown as written),
        # and dd into an image made beforehand with `rbd create` (like rbd-fuse below).
        for variant, precreated in (("new", False), ("pre", True)):
            name = f"radosfs-{variant}"
            if precreated:
                rbd_cli(b, "rbd", "create", "--size", f"{size // MiB}M", f"{pool}/{name}")
            warm(src)
            m = b.mount()
            path = m / pool / name
            say(f"radosfs: dd {size // MiB} MiB into "
                f"{'a pre-created image' if precreated else 'a new file'}")
            with b.cpu(m) as cpu:
                r[f"radosfs_{variant}_write_s"], _ = timed(dd_write(path, precreated), to)
            r[f"radosfs_{variant}_write_cpu"] = cpu.share
            r[f"radosfs_{variant}_write_cpu_s_per_gib"] = per_gib(cpu, "radosfs", size)
            r[f"radosfs_{variant}_stats_after_write"] = m.stats()
            m = b.remount(m)
            say("radosfs: dd it back (cold)")
            with b.cpu(m) as cpu:
                r[f"radosfs_{variant}_read_s"], _ = timed(dd_read(path), to)
            r[f"radosfs_{variant}_read_cpu"] = cpu.share
            r[f"radosfs_{variant}_read_cpu_s_per_gib"] = per_gib(cpu, "radosfs", size)
            check(path, f"radosfs {variant}")
            b.umount(m)
            remove_images(io)

        # rbd-fuse, same pool: dd into a pre-created image (its new files are 1 GiB images,
        # and data written to a new file can land in another open image).
        name = "rbdfuse-pre"
        rbd_cli(b, "rbd", "create", "--size", f"{size // MiB}M", f"{pool}/{name}")
        warm(src)
        fmnt = b.tmp / "rbd-fuse"
        fm = b.rbd_fuse(pool, fmnt, b.tmp / "rbd-fuse-1.log")
        try:
            say(f"rbd-fuse: dd {size // MiB} MiB into a pre-created image")
            with b.cpu(fm) as cpu:
                r["rbdfuse_write_s"], _ = timed(dd_write(fmnt / name, True), to)
            r["rbdfuse_write_cpu"] = cpu.share
        finally:
            b.close_fuse(fm)
        b.drop_kernel_caches()
        fm = b.rbd_fuse(pool, fmnt, b.tmp / "rbd-fuse-2.log")
        try:
            say("rbd-fuse: dd it back (cold)")
            with b.cpu(fm) as cpu:
                r["rbdfuse_read_s"], _ = timed(dd_read(fmnt / name), to)
            r["rbdfuse_read_cpu"] = cpu.share
            check(fmnt / name, "rbd-fuse")
        finally:
            b.close_fuse(fm)
        remove_images(io)

        # Python librbd aio loop, 16 x 4 MiB in flight, on a pre-created image.
        warm(src)
        say(f"librbd aio x{BIG_DEPTH} write/read of a pre-created image")
        (r["librbd_write_s"], r["librbd_write_cpu"], r["librbd_read_s"],
         r["librbd_read_cpu"], nread) = librbd_loop(
            io, "librbd-loop", src, size, lambda: b.cpu(client="self"))
        if nread != size:
            b.issue(f"librbd aio read returned {nread} bytes, not {size}")
        remove_images(io)
    finally:
        for fm in list(b.fuse_mounts):
            b.close_fuse(fm)
        for m in list(b.mounts):
            b.umount(m)
        try:
            left = remove_images(io)
            if left:
                b.issue(f"rbd step: removed {left} leftover image(s) from {pool}")
        except (rados.Error, rbd_mod.Error) as exc:
            b.issue(f"rbd step: could not remove the images of {pool}: {exc}")
        io.close()
        b.delete_pool(pool)

    for v in ("new", "pre"):
        for k in ("write", "read"):
            ours = r.get(f"radosfs_{v}_{k}_s")
            r[f"ratio_{v}_{k}_vs_rbdfuse"] = ratio(ours, r.get(f"rbdfuse_{k}_s"))
            r[f"ratio_{v}_{k}_vs_librbd"] = ratio(ours, r.get(f"librbd_{k}_s"))

    def tgt(v: str, k: str) -> str:
        a, c = r[f"ratio_{v}_{k}_vs_rbdfuse"], r[f"ratio_{v}_{k}_vs_librbd"]
        goal = GOAL_VS_AIO[k]
        return f"÷ rbd-fuse ≥ 1: {mark_ge(a, 1.0)}; ÷ librbd ≥ {goal}: {mark_ge(c, goal)}"

    rows = []
    for k in ("write", "read"):
        for v, label in (("pre", "pre-created image"), ("new", "file dd created")):
            rows.append([f"{k} {fmt_size(size)}, radosfs: {label}",
                         rate_cell(r, f"radosfs_{v}_{k}", size),
                         rate_cell(r, f"rbdfuse_{k}", size), rate_cell(r, f"librbd_{k}", size),
                         fmt_ratio(r[f"ratio_{v}_{k}_vs_rbdfuse"]),
                         fmt_ratio(r[f"ratio_{v}_{k}_vs_librbd"]), tgt(v, k)])
    verified = r.get("verified")
    b.sections.append(
        f"### 3. RBD: one {size / MiB:,.0f} MiB image\n\n"
        f"Image pool `{pool}` ({r['pool_desc']}; `ceph osd pool create … 32` + `rbd pool "
        "init`). Write: `dd bs=4M conv=fsync` from a page-cached file (`conv=notrunc,fsync` "
        "into an image made with `rbd create --size`); read: `dd bs=4M` > /dev/null after "
        "unmount + drop_caches + mount. radosfs: the image is either pre-created, like "
        "rbd-fuse's and librbd's (the like-for-like rows), or created by dd through the "
        "mount (a 0-byte image grown as written); the reference columns are the same in "
        "both rows. rbd-fuse: the Debian package, same pool, pre-created image (its new files "
        "are 1 GiB images and misdirect data). librbd: this script's Python loop, "
        f"`rbd.Image.aio_write/aio_read` {BIG_DEPTH} × 4 MiB in flight with completion "
        "callbacks, `aio_flush` at the end of the write, close + drop_caches + open before "
        "the read, librbd defaults (radosfs turns librbd's cache off). Ratios are radosfs "
        "throughput ÷ reference; CPU as in section 1"
        + ("; data checked with `cmp`: "
           + ", ".join(f"{w} {'ok' if ok else 'DIFFERS'}" for w, ok in verified.items())
           if verified else "") + ".\n\n"
        + table(["operation", "radosfs `dd`", "rbd-fuse `dd`",
                 f"librbd aio ×{BIG_DEPTH} (4 MiB)", "÷ rbd-fuse", "÷ librbd",
                 "targets"], rows))
