"""The main job on the embedded default: a local single-node cluster (bluestore on a
sparse file, so data survives a restart) mounted at a directory, ready to try.

    python -m radosfs.dev.demo [start] [--dir DIR] [--mountpoint MNT]
    python -m radosfs.dev.demo stop
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .cluster import ClusterError, LocalCluster
from .mount_process import MountProcess, daemon_pids, pid_alive

DEFAULT_DIR = Path("/var/lib/radosfs-demo")
DEFAULT_MNT = Path("/mnt/radosfs")


def start(directory: Path, mountpoint: Path) -> int:
    cluster = LocalCluster(directory / "cluster", store="bluestore")
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    env = dict(os.environ, **cluster.env())
    pools = cluster.ceph("osd", "pool", "ls").split()
    if "data" not in pools:
        cluster.ceph("osd", "pool", "create", "data", "16")
        cluster.ceph("osd", "pool", "application", "enable", "data", "radosfs")
        subprocess.run(["rados", "-p", "data", "put", "hello.txt", "-"], env=env, check=True,
                       input=b"Hello from RADOS: this file is the object 'hello.txt'.\n")
    if "rbd" not in pools:
        cluster.ceph("osd", "pool", "create", "rbd", "16")
        subprocess.run(["rbd", "pool", "init", "rbd"], env=env, check=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(mountpoint):
        print(f"demo: {mountpoint} is already mounted")
    else:
        try:
            MountProcess(mountpoint, cluster.conf_path, log=directory / "radosfs.log")
        except RuntimeError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    print(f"""
radosfs is mounted at {mountpoint} (a local Ceph cluster in {directory}/cluster).

Try:
  ls -l {mountpoint}                      # one directory per pool
  cat {mountpoint}/data/hello.txt          # a RADOS object is a file
  cp /etc/services {mountpoint}/data/      # then: CEPH_CONF={cluster.conf_path} rados -p data ls
  mkdir -p {mountpoint}/data/a/b && cp /etc/hostname {mountpoint}/data/a/b/
  truncate -s 64M {mountpoint}/rbd/disk1   # an RBD image (rbd -p rbd ls)
  cat {mountpoint}/.radosfs-stats           # cache and I/O counters

The cluster's own tools: export CEPH_CONF={cluster.conf_path}; ceph -s; rados df
Log: {directory}/radosfs.log
Stop: bash scripts/demo stop   (unmounts, writing everything back, and stops the cluster;
      data stays in {directory} for the next start)
""")
    return 0


def stop(directory: Path, mountpoint: Path) -> int:
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", str(mountpoint)], check=False)
    # The daemon writes everything back, then exits: wait for it before stopping the OSD.
    pids = daemon_pids(mountpoint)
    deadline = time.monotonic() + 120
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            print("demo: the radosfs daemon did not exit; stopping the cluster anyway",
                  file=sys.stderr)
            break
        time.sleep(0.2)
    LocalCluster(directory / "cluster", store="bluestore").stop()
    print("demo: unmounted and stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="radosfs.dev.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="start", choices=["start", "stop"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--mountpoint", type=Path, default=DEFAULT_MNT)
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    return (start if args.action == "start" else stop)(args.dir, args.mountpoint)


if __name__ == "__main__":
    sys.exit(main())
