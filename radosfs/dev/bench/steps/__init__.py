"""The benchmark's steps, in the order they run. A step is `run(b: Bench)`: it mounts with
`b.mount()`, times with `timed()` / `b.cpu(m)`, puts raw figures in `b.results[name]` and a
markdown table in `b.sections`, unmounts with `b.umount(m)` and deletes its data."""
from __future__ import annotations

from ..harness import Step
from . import bigfile, find, fio, floor, listing, rbd, reread, smallfiles

STEPS = [
    Step("bigfile", "big file: cp/cat vs rados --striper vs librados aio; daemon peak RSS",
         bigfile.run),
    Step("smallfiles", "1,000 x 4 KiB: create, ls -l, cat vs librados", smallfiles.run),
    Step("floor", "1,000 x 4 KiB: create, cat through an in-memory pyfuse3 filesystem",
         floor.run),
    Step("listing", "ls -l of a 10,000-object pool, fresh mount", listing.run),
    Step("find", "find over a 200,000-object pool: time, daemon RSS, inodes forgotten",
         find.run),
    Step("reread", "cached re-read of a 256 MiB file", reread.run),
    Step("rbd", "RBD image: dd through the mount vs rbd-fuse vs librbd aio", rbd.run,
         lambda args: not args.skip_rbd),
    Step("fio", "RBD image: fio random 4 KiB at QD 16, radosfs vs rbd-fuse vs fio's rbd "
         "engine", fio.run, lambda args: not args.skip_rbd),
]
