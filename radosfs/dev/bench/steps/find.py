"""Step find: `find | wc -l` over a pool of 200,000 objects (made with librados aio)
through a fresh mount, with the daemon's RSS sampled; then the kernel is made to drop its
dentries and inodes (drop_caches), which sends `forget` for every one, and the daemon's
inode table and RSS are read again: memory that follows what the kernel holds, not every
name the mount has shown."""
from __future__ import annotations

import subprocess
import time

from ..constants import FIND_COUNT, RSS_MARGIN
from ..harness import Bench, say
from ..meters import RssSampler, rss_of, timed

FORGET_WAIT = 20.0     # seconds to wait for the kernel's forgets to arrive


def _known(stats: dict) -> int | None:
    return (stats.get("inodes") or {}).get("known")


def run(b: Bench) -> None:
    r: dict = {"count": FIND_COUNT}
    b.results["find"] = r
    names = [f"obj-{i:06d}" for i in range(FIND_COUNT)]
    with b.filled_pool("find", names, b"x" * 16, r) as (pool, _):
        m = b.mount()
        try:
            r["rss_before_bytes"] = rss_of(m.pid) if m.pid else None
            sampler = RssSampler(m.pid) if m.pid else None
            if sampler:
                sampler.start()
            say(f"find | wc -l over {FIND_COUNT:,} objects through a fresh mount")
            try:
                with b.cpu(m) as cpu:
                    r["radosfs_find_s"], res = timed(f"find {m / pool} | wc -l", 600,
                                                     stdout=subprocess.PIPE)
            finally:
                if sampler:
                    r["rss_peak_bytes"] = sampler.stop()
            r["radosfs_find_cpu"] = cpu.share
            r["find_lines"] = int(res.stdout.split()[0])
            r["rss_after_find_bytes"] = rss_of(m.pid) if m.pid else None
            r["inodes_after_find"] = _known(m.stats())
            # The kernel forgets what it drops: every inode of the listing, at once.
            b.drop_kernel_caches()
            deadline = time.monotonic() + FORGET_WAIT
            known = r["inodes_after_find"]
            while time.monotonic() < deadline:
                time.sleep(1.0)
                now = _known(m.stats())
                if now is None or (known is not None and now >= known):
                    break
                known = now
            r["inodes_after_forget"] = known
            r["rss_after_forget_bytes"] = rss_of(m.pid) if m.pid else None
        finally:
            b.umount(m)
        if r["find_lines"] != FIND_COUNT + 1:
            b.issue(f"find over the {FIND_COUNT:,}-object pool gave {r['find_lines']} "
                    f"lines, not {FIND_COUNT + 1}")
    limit = b.cache_size + RSS_MARGIN
    after = r.get("rss_after_find_bytes")
    r["rss_limit_bytes"] = limit
    r["rss_ok"] = None if after is None else after <= limit
