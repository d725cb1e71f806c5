"""Step fio: random 4 KiB reads and writes at queue depth 16 on one image, three ways side
by side: fio's rbd engine (librbd in fio's process: the limit), fio with libaio and O_DIRECT
on the image's file in an rbd-fuse mount, and the same on the image's file in radosfs."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import rados
import rbd as rbd_mod

from ..constants import (FIO_DEPTH, FIO_GOAL_VS_RBD_ENGINE, FIO_GOAL_VS_RBDFUSE, FIO_IMAGE,
                         FIO_SECONDS, MiB)
from ..harness import Bench, say
from ..meters import timed
from ..profiling import profiled
from ..references import remove_images
from ..report import fmt_cpu, fmt_ratio, mark_ge, table
from .rbd import rbd_cli

IMAGE = "fio-img"
RW = ("randread", "randwrite")


def fio_cmd(rw: str, target: list[str]) -> list[str]:
    """One time-based fio job: 4 KiB `rw` at FIO_DEPTH in flight on `target`'s file."""
    return ["fio", "--name=bench", f"--rw={rw}", "--bs=4k", f"--iodepth={FIO_DEPTH}",
            "--direct=1", f"--size={FIO_IMAGE}", f"--runtime={FIO_SECONDS}", "--time_based",
            "--ramp_time=2", "--randrepeat=0", "--norandommap", "--output-format=json",
            *target]


def fio_result(out: bytes, rw: str) -> dict:
    """IOPS and mean completion latency (µs) of a fio JSON report."""
    text = out.decode(errors="replace")
    job = json.loads(text[text.index("{"):])["jobs"][0]
    side = job["read" if rw == "randread" else "write"]
    lat = side.get("clat_ns", {}).get("mean")
    return {"iops": side["iops"], "clat_us": lat / 1000 if lat else None,
            "errors": job.get("error", 0)}


def run(b: Bench) -> None:
    if shutil.which("fio") is None:
        raise RuntimeError("fio is not installed (apt-get install fio; scripts/setup does)")
    r: dict = {"image_bytes": FIO_IMAGE, "depth": FIO_DEPTH, "seconds": FIO_SECONDS}
    b.results["fio"] = r
    pool = f"{b.pool}-fio"
    say(f"creating image pool {pool} and a {FIO_IMAGE // MiB} MiB image, written in full")
    b.extra_pools.append(pool)
    rbd_cli(b, "ceph", "osd", "pool", "create", pool, "32")
    rbd_cli(b, "rbd", "pool", "init", pool)
    rbd_cli(b, "rbd", "create", "--size", f"{FIO_IMAGE // MiB}M", f"{pool}/{IMAGE}")
    engine = ["--ioengine=rbd", "--clientname=admin", f"--pool={pool}", f"--rbdname={IMAGE}"]
    timeout = FIO_SECONDS + 120
    io = b.rados.open_ioctx(pool)
    try:
        # Every object exists: reads are served by the OSD, not answered as holes.
        timed(["fio", "--name=fill", "--rw=write", "--bs=4M", "--iodepth=16",
               f"--size={FIO_IMAGE}", *engine], 300, env=b.env())

        def one(who: str, target: list[str], meter_of=None) -> None:
            for rw in RW:
                say(f"{who}: fio {rw} 4k x{FIO_DEPTH}, {FIO_SECONDS} s")
                with b.cpu(meter_of) as cpu:
                    _, res = timed(fio_cmd(rw, target), timeout, stdout=subprocess.PIPE,
                                    env=b.env())
                got = fio_result(res.stdout, rw)
                got["cpu"] = cpu.share
                if got["errors"]:
                    b.issue(f"fio {who} {rw}: fio reported error {got['errors']}")
                r[f"{who}_{rw}"] = got

        one("fio_rbd", engine)
        fmnt = b.tmp / "rbd-fuse-fio"
        fm = b.rbd_fuse(pool, fmnt, b.tmp / "rbd-fuse-fio.log")
        try:
            one("rbdfuse", ["--ioengine=libaio", f"--filename={fmnt / IMAGE}"], fm)
        finally:
            b.close_fuse(fm)
        m = b.mount()
        try:
            path: Path = m / pool / IMAGE
            one("radosfs", ["--ioengine=libaio", f"--filename={path}"], m)
            r["radosfs_stats"] = m.stats()
            for rw in RW:
                profiled(b, m, f"fio-{rw}", fio_cmd(rw, ["--ioengine=libaio",
                                                         f"--filename={path}"]))
        finally:
            b.umount(m)
    finally:
        for fm in list(b.fuse_mounts):
            b.close_fuse(fm)
        try:
            remove_images(io)
        except (rados.Error, rbd_mod.Error) as exc:
            b.issue(f"fio step: could not remove the images of {pool}: {exc}")
        io.close()
        b.delete_pool(pool)

    rows = []
    for rw in RW:
        ours = r.get(f"radosfs_{rw}", {}).get("iops")
        fuse = r.get(f"rbdfuse_{rw}", {}).get("iops")
        lim = r.get(f"fio_rbd_{rw}", {}).get("iops")
        r[f"ratio_{rw}_vs_rbdfuse"] = ours / fuse if ours and fuse else None
        r[f"ratio_{rw}_vs_fio_rbd"] = ours / lim if ours and lim else None

        def cell(who: str) -> str:
            got = r.get(f"{who}_{rw}") or {}
            if not got:
                return "n/a"
            lat = f", {got['clat_us']:,.0f} µs mean" if got.get("clat_us") else ""
            return f"{got['iops']:,.0f} IOPS{lat} (CPU: {fmt_cpu(got.get('cpu'))})"

        rows.append([f"4 KiB {rw}, QD {FIO_DEPTH}", cell("radosfs"), cell("rbdfuse"),
                     cell("fio_rbd"), fmt_ratio(r[f"ratio_{rw}_vs_rbdfuse"]),
                     fmt_ratio(r[f"ratio_{rw}_vs_fio_rbd"]),
                     f"÷ rbd-fuse ≥ {FIO_GOAL_VS_RBDFUSE}: "
                     f"{mark_ge(r[f'ratio_{rw}_vs_rbdfuse'], FIO_GOAL_VS_RBDFUSE)}; "
                     f"÷ fio rbd ≥ {FIO_GOAL_VS_RBD_ENGINE}: "
                     f"{mark_ge(r[f'ratio_{rw}_vs_fio_rbd'], FIO_GOAL_VS_RBD_ENGINE)}"])
    b.sections.append(
        f"### 4. RBD random I/O: fio on one {FIO_IMAGE // MiB:,} MiB image\n\n"
        f"Image pool `{pool}` (32 PGs, `rbd pool init`), one image written in full with "
        f"fio's rbd engine first. Each row: `fio --rw=… --bs=4k --iodepth={FIO_DEPTH} "
        f"--direct=1 --runtime={FIO_SECONDS} --time_based --ramp_time=2 --norandommap`; "
        "radosfs and rbd-fuse with `--ioengine=libaio` on the image's file in the mount, "
        "fio's `--ioengine=rbd` (librbd in fio's process, librbd defaults) on the same "
        "image. CPU: client = fio, plus the FUSE daemon and the OSD.\n\n"
        + table(["operation", "radosfs", "rbd-fuse", "fio rbd engine", "÷ rbd-fuse",
                 "÷ fio rbd", "targets"], rows))
