"""Step reread: a 256 MiB file read twice through the mount (the second `cat` is timed),
then once more after drop_caches (from the daemon's own cache)."""
from __future__ import annotations

from pathlib import Path

from ..constants import REREAD_SIZE
from ..harness import Bench, say
from ..meters import drop_caches, timed, warm


def run(b: Bench) -> None:
    r: dict = {"bytes": REREAD_SIZE}
    b.results["reread"] = r
    src: Path = b.reread_src
    warm(src)
    m = b.mount()
    dst = m / b.pool / "reread.bin"
    say("256 MiB: cp in, cat, cat again (timed), cat after drop_caches")
    r["write_s"], _ = timed(["cp", str(src), str(dst)], 300)
    r["first_read_s"], _ = timed(["cat", str(dst)], 300)
    with b.cpu(m) as cpu:
        r["second_read_s"], _ = timed(["cat", str(dst)], 300)
    r["second_read_cpu"] = cpu.share
    # The kernel's page cache usually answers the second read; with it dropped the
    # daemon's own cache does (as long as cache_size holds the file).
    r["kernel_cache_dropped"] = drop_caches()
    r["daemon_cache_read_s"], _ = timed(["cat", str(dst)], 300)
    r["stats"] = m.stats()
    dst.unlink()
    b.umount(m)
    b.clean()
    gbps = REREAD_SIZE / 1e9 / r["second_read_s"]
    r["second_read_GBps"] = gbps
    r["ok"] = gbps >= 1.0
