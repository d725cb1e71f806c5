"""The benchmark's units and the shape of its workload (sizes, counts, requests in flight)."""

import sys
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
OBJ = 4 * MiB                 # object size of the aio loop (the striper's default too)
BIG_DEPTH = 16                # aio requests in flight, big objects
SMALL_DEPTH = 32              # aio requests in flight, small objects
SMALL_COUNT = 1000
SMALL_PROCS = 8               # processes of the parallel small-file rows (and aio depth)
SMALL_SIZE = 4096
LIST_COUNT = 10_000
FIND_COUNT = 200_000           # objects of the find + RSS step
REREAD_SIZE = 256 * MiB
RSS_INTERVAL = 0.05
RSS_MARGIN = 150 * MiB
# py-spy on PATH, else the one installed beside this interpreter (the venv's bin/, which
# is not on PATH when the bench is started as .venv/bin/python scripts/bench).
PY_SPY_CANDIDATES = ("py-spy", str(Path(sys.executable).parent / "py-spy"))
# The image the fio rows run on (written in full first): 4 x the default cache_size, so
# the daemon's cache cannot simply hold it all (random I/O on an image the size of a disk).
FIO_IMAGE = 2 * GiB
FIO_DEPTH = 16                # fio iodepth of the random 4 KiB rows
FIO_SECONDS = 15              # each fio row runs this long (after a 2 s ramp)
# Issue 12's goals, which every report row that marks met/missed uses: radosfs throughput
# ÷ the aio loop (big files) or librbd aio (RBD dd), by direction; fio's random rows.
GOAL_VS_AIO = {"write": 0.6, "read": 0.5}
FIO_GOAL_VS_RBDFUSE = 1.5
FIO_GOAL_VS_RBD_ENGINE = 0.5
