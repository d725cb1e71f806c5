"""The command: options, then one run (cluster, data, pool, the steps, cleanup), the
report on stdout and, with --json, the raw figures."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

try:
    import rados
    import rbd  # noqa: F401 -- the rbd step needs it; say so before anything starts
except ImportError:
    sys.exit("bench: the rados/rbd modules are missing: run with the repo's venv "
             "(.venv/bin/python scripts/bench) or /usr/bin/python3")

from radosfs.dev import bench as package
from radosfs.dev.cluster import LocalCluster
from radosfs.options import parse_size

from .constants import GiB, MiB, OBJ
from .harness import Bench, app_enable, cleanup, make_data, run_steps, say
from .meters import machine_info
from .report import json_doc, report
from .steps import STEPS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench",
                                description=(package.__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="big-file size (default 1G)")
    p.add_argument("--store", choices=("memstore", "bluestore"), default="memstore",
                   help="object store of the cluster this script starts (default memstore)")
    p.add_argument("--memstore-bytes", default="8G", help="memstore device size (default 8G)")
    p.add_argument("--conf", type=Path, help="use the existing cluster of this ceph.conf "
                   "(needs mon_allow_pool_delete to remove its pools afterwards)")
    p.add_argument("--cache-size", help="radosfs cache_size mount option (default: radosfs's, "
                   "512M)")
    p.add_argument("-o", "--mount-options", default="", help="extra radosfs mount options")
    p.add_argument("--repeat", type=int, default=1, help="run the big-file measurements "
                   "N times (interleaved) and report the median (default 1)")
    p.add_argument("--skip-rbd", action="store_true", help="leave out the RBD section")
    p.add_argument("--steps", help="comma-separated subset of: "
                   + ", ".join(s.name for s in STEPS))
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--profile", action="store_true", help="repeat the radosfs operations "
                   "(big cp and cat, small-file create and cat, 10,000-object ls) once more, "
                   "untimed, with py-spy recording the daemon; summarise the top functions")
    p.add_argument("--profile-dir", type=Path, help="where the py-spy output goes "
                   "(default: TMPDIR/profiles, kept after the run)")
    p.add_argument("--no-verify", action="store_true", help="skip cmp of the data read back")
    p.add_argument("--keep", action="store_true", help="keep the temp dir's logs afterwards "
                   "(the data file is always removed)")
    args = p.parse_args(argv)
    args.size = parse_size(args.size)
    args.memstore_bytes = parse_size(args.memstore_bytes)
    if args.size < OBJ:
        p.error("--size must be at least 4M")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    known = {s.name for s in STEPS}
    args.step_names = set(args.steps.split(",")) if args.steps else known
    if args.step_names - known:
        p.error(f"unknown steps {sorted(args.step_names - known)}")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    info = machine_info()
    # Also SIGINT: a shell starts background jobs with it ignored, and Python keeps that.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="radosfs-bench-", dir="/tmp"))
    say(f"working in {tmp}")
    if args.profile:
        args.profile_dir = (args.profile_dir or tmp / "profiles").resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    cluster = None
    handle = None
    b: Bench | None = None
    failed: dict[str, str] = {}
    interrupted = False
    try:
        if args.conf:
            conf = args.conf.resolve()
            args.store_label = f"existing cluster ({conf})"
        else:
            cluster = LocalCluster(tmp / "cluster", store=args.store,
                                   memstore_bytes=args.memstore_bytes)
            say(f"starting a {args.store} cluster")
            cluster.start()
            conf = cluster.conf_path
            args.store_label = (f"memstore ({args.memstore_bytes / GiB:g} GiB device)"
                                if args.store == "memstore" else "bluestore (file-backed)")
        say(f"making {args.size // MiB} MiB of random data")
        big, reread = make_data(tmp, args.size)
        handle = rados.Rados(conffile=str(conf))
        handle.conf_set("rados_osd_op_timeout", "120")
        handle.conf_set("rados_mon_op_timeout", "60")
        handle.connect()
        pool = "bench-" + uuid.uuid4().hex[:6]
        handle.create_pool(pool)
        app_enable(handle, pool)
        cache_size = parse_size(args.cache_size) if args.cache_size else 512 * MiB
        opts = ",".join(o for o in ((f"cache_size={args.cache_size}" if args.cache_size else ""),
                                    args.mount_options) if o)
        b = Bench(args=args, tmp=tmp, conf=conf, rados=handle, pool=pool,
                  io=handle.open_ioctx(pool), mount_opts=opts, cache_size=cache_size,
                  cluster=cluster, big=big, reread_src=reread)
        b.pool_desc = b.describe_pool()
        run_steps(b, STEPS, failed)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(b, handle, cluster, tmp, args.keep or args.profile)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if b is None:
        return 1
    try:
        text = report(b, info, started, failed, interrupted)
    except Exception:  # noqa: BLE001 -- never lose the figures to a report bug
        text = ("report failed:\n" + traceback.format_exc() + "\nraw results:\n"
                + json.dumps(b.results, indent=1, default=str))
    print(text)
    if args.json:
        doc = json_doc(b, info, started, failed, interrupted)
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        say(f"results written to {args.json}")
    return 1 if failed or interrupted else 0
