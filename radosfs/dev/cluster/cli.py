"""The command line: ``python -m radosfs.dev.cluster start|stop|status DIR``."""
from __future__ import annotations

import argparse
import logging
import sys

from .common import ClusterError
from .local import LocalCluster


def main(argv: list[str] | None = None) -> int:
    """``python -m radosfs.dev.cluster start|stop|status DIR``: manage a local test cluster."""
    parser = argparse.ArgumentParser(prog="python -m radosfs.dev.cluster",
                                     description="Run a throwaway single-node Ceph cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="build (if needed) and start the cluster in DIR")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--store", choices=("memstore", "bluestore"), default=None,
                   help="object store for a new cluster (default: the built one, else memstore)")
    p.add_argument("--memstore-bytes", type=int, default=4 << 30)
    p.add_argument("--bluestore-bytes", type=int, default=20 << 30)
    p.add_argument("--osds", type=int, default=None,
                   help="OSDs of a new cluster (default: the built one's, else 1); several: "
                        "pools replicated 3 times, min_size 2, an EC profile radosfs-k2m1")
    p.add_argument("--timeout", type=float, default=90)
    p = sub.add_parser("stop", help="stop the cluster's daemons")
    p.add_argument("directory", metavar="DIR")
    p = sub.add_parser("status", help="print the conf path and `ceph -s`")
    p.add_argument("directory", metavar="DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    store = getattr(args, "store", None)
    osds = getattr(args, "osds", None)
    marker = LocalCluster(args.directory)._read_marker() or {}
    if store is None:
        store = marker.get("store", "memstore")
    if osds is None:
        osds = marker.get("osds", 1)
    cluster = LocalCluster(args.directory, store=store,
                           memstore_bytes=getattr(args, "memstore_bytes", 4 << 30),
                           bluestore_bytes=getattr(args, "bluestore_bytes", 20 << 30),
                           osds=osds)
    try:
        if args.command == "start":
            cluster.start(timeout=args.timeout)
            print(f"export CEPH_CONF={cluster.conf_path}")
        elif args.command == "stop":
            cluster.stop()
        else:
            print(f"conf: {cluster.conf_path}")
            for d in cluster._daemons:
                pid = cluster._pid(d)
                print(f"{d.name}: {'running, pid %d' % pid if pid else 'stopped'}")
            if not cluster.running():
                return 3
            print(cluster.ceph("-s", timeout=15), end="")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
