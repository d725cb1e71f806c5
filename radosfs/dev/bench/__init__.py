"""radosfs benchmark: the mount side by side with librados and the rados CLI, in one run.

    .venv/bin/python scripts/bench [--size 1G] [--store memstore|bluestore] [--conf PATH]
                                   [--cache-size 512M] [--repeat N] [--json OUT] [--profile]
                                   [--steps a,b] [--skip-rbd]
    .venv/bin/python -m radosfs.dev.bench [the same options]

It starts its own single-node cluster (memstore, 8 GiB device, unless --conf names an
existing cluster), creates a pool, mounts radosfs with the real mount command and measures:

  bigfile     a --size file (1 GiB): `cp` into the mount (the cp process, close included) and
              `cat` back to /dev/null after an unmount + remount + drop_caches; against
              `rados --striper put/get` and a librados aio loop (16 x 4 MiB in flight);
              peak RSS of the radosfs daemon during the cp (VmRSS every 50 ms)
  smallfiles  1,000 files of 4 KiB: create+write (one process), `ls -l`, `cat` them all
              (one process), against librados write_full/stat/read, sequential and aio x32
  listing     `ls -l | wc -l` of a pool of 10,000 objects (made with librados aio) through
              a fresh mount
  reread      a 256 MiB file read twice through the mount: the second `cat` is timed
  rbd         a --size image (1 GiB) in an image pool (`ceph osd pool create P 32` + `rbd
              pool init`): `dd bs=4M conv=fsync` through the mount into a new file (a 0-byte
              image grown as written) and into an image pre-created with `rbd create`
              (conv=notrunc,fsync), `dd` back after unmount + remount + drop_caches; against
              rbd-fuse on the same pool (pre-created image: its new files are 1 GiB images
              and misdirect data) and a Python librbd aio loop (16 x 4 MiB in flight);
              --skip-rbd leaves it out
  fio         random 4 KiB reads and writes at queue depth 16 (15 s each) on one 2 GiB image
              written in full first: fio with libaio + O_DIRECT on the image's file through
              radosfs and through rbd-fuse, and fio's rbd engine on the same image (needs
              fio; --skip-rbd leaves it out too)

Targets are recorded, never asserted. Data is deleted after every step (memstore keeps it
in RAM). Mounts and the cluster are always torn down, also on Ctrl-C. The exit status is 1
only if a step failed to run (or the run was interrupted).

Each radosfs figure comes with CPU shares (client, daemon, OSD, whole machine): on a shared
2-core machine they tell a slow radosfs from a busy machine. The big-file and RBD rows also
record the daemon's CPU seconds per GiB moved (the targets table shows them). --repeat N takes medians of the
big-file figures; --profile adds py-spy summaries of the daemon.

Adding a section: write a module steps/x.py with `run(b: Bench)` -- mount with
`b.mount()`, time with `timed()` / `b.cpu(m)`, put raw figures in `b.results["x"]`, a
markdown table in `b.sections`, unmount with `b.umount(m)` and delete its data -- and add a
`Step` to STEPS in steps/__init__.py.

Modules: constants (sizes, counts, depths), meters (timing, CPU shares, RSS, the machine),
references (librados/librbd aio loops, rbd-fuse), harness (the Bench object, the mounts,
the run loop, cleanup), profiling (--profile: py-spy), report (formatting, the markdown
report, the JSON), steps/ (one module per step), cli (options, main).
"""
