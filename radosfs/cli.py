"""`radosfs`: the command for users of a mount (see radosfs(1)).

    radosfs status [MOUNTPOINT]          mounts, their cluster, pools, dirty bytes, errors
    radosfs stats [--json] [MOUNTPOINT]  the counters of /.radosfs-stats
    radosfs flush MOUNTPOINT             write back everything; returns once RADOS has it
    radosfs snap create|list|remove POOL [NAME] [-m MOUNTPOINT]
    radosfs mount SOURCE MOUNTPOINT -o OPTS   (= mount.radosfs)
    radosfs cluster start|stop|status DIR     a throwaway local cluster (development)

Everything but `mount` and `cluster` works through the mount alone (files, xattrs and
directories of the mountpoint): no Ceph binding or key is needed. `radosfs SOURCE MOUNTPOINT
-o OPTS` (no subcommand) mounts too, which is how mount.fuse3 runs a `fuse.radosfs` type.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from . import __version__
from .command.process import radosfs_mounts

STATS_NAME = ".radosfs-stats"
FLUSH_XATTR = "user.radosfs.flush"
COMMANDS = ("status", "stats", "flush", "snap", "mount", "cluster")


class CliError(Exception):
    pass


def pick_mount(mountpoint: str | None) -> str:
    mounts = [m[0] for m in radosfs_mounts()]
    if mountpoint is not None:
        path = os.path.abspath(mountpoint)
        if path not in mounts:
            raise CliError(f"{path} is not a radosfs mount")
        return path
    if len(mounts) == 1:
        return mounts[0]
    if not mounts:
        raise CliError("no radosfs mount")
    raise CliError(f"{len(mounts)} radosfs mounts: name one ({', '.join(mounts)})")


def read_stats(mountpoint: str) -> dict:
    try:
        with open(os.path.join(mountpoint, STATS_NAME)) as f:
            return json.load(f)
    except OSError as exc:
        raise CliError(f"cannot read {mountpoint}/{STATS_NAME}: {exc.strerror}") from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_status(args) -> int:
    mounts = radosfs_mounts()
    if args.mountpoint:
        mounts = [m for m in mounts if m[0] == pick_mount(args.mountpoint)]
    if not mounts:
        print("no radosfs mount")
        return 0 if not args.mountpoint else 1
    for mp, source, kopts in mounts:
        print(f"{mp}: source {source}, {'ro' if kopts.split(',')[0] == 'ro' else 'rw'}")
        try:
            st = read_stats(mp)
        except CliError as exc:
            print(f"  daemon not answering: {exc}")
            continue
        m, c, r = st.get("mount", {}), st["cache"], st["rados"]
        try:
            pools = sorted(n for n in os.listdir(mp) if n != STATS_NAME)
        except OSError as exc:
            pools = [f"(cannot list: {exc.strerror})"]
        print(f"  daemon pid {m.get('pid')}, user {m.get('name')}, "
              f"{'mons ' + m['mon_host'] if m.get('mon_host') else 'conf ' + str(m.get('conf'))}")
        print(f"  pools ({len(pools)}): {' '.join(pools)}")
        print(f"  cache {_size(c['cached_bytes'])} of {_size(c['budget'])}, dirty "
              f"{_size(c['dirty_bytes'])}, write-back errors {c['writeback_errors']}")
        print(f"  rados ops {r['aio_ops'] + r['thread_calls']}, errors {r['errors']}, "
              f"in flight {r['ops_in_flight']}")
        print(f"  log {m.get('log')}")
        if m.get("admin_socket"):
            print(f"  admin socket {m['admin_socket']} (ceph daemon PATH perf dump)")
        if m.get("metrics_port") is not None or m.get("metrics_file"):
            where = [f"http://127.0.0.1:{m['metrics_port']}/metrics"
                     if m.get("metrics_port") is not None else None, m.get("metrics_file")]
            print(f"  metrics {' '.join(w for w in where if w)}")
    return 0


def cmd_stats(args) -> int:
    st = read_stats(pick_mount(args.mountpoint))
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
        return 0
    for key, value in _flat(st):
        print(f"{key} {value}")
    return 0


def _flat(d: dict, prefix: str = ""):
    """`section.field value` lines; nested sections (requests.pools.POOL.bytes_read) too."""
    for key, value in sorted(d.items()):
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def cmd_flush(args) -> int:
    mp = pick_mount(args.mountpoint)
    before = read_stats(mp)["cache"]["dirty_bytes"]
    try:
        os.setxattr(mp, FLUSH_XATTR, b"1")
    except OSError as exc:
        if exc.errno == errno.EROFS:
            print(f"{mp}: read-only mount, nothing to write back")
            return 0
        raise CliError(f"flush of {mp} failed: {exc.strerror} (see the mount's log)") from None
    print(f"{mp}: written back ({_size(before)} were dirty)")
    return 0


def cmd_snap(args) -> int:
    mp = pick_mount(args.mount)
    snapdir = os.path.join(mp, args.pool, ".snap")
    try:
        if args.action == "list":
            for name in sorted(os.listdir(snapdir)):
                print(name)
        elif args.name is None:
            raise CliError(f"snap {args.action} needs a snapshot name")
        elif args.action == "create":
            os.mkdir(os.path.join(snapdir, args.name))
        else:
            os.rmdir(os.path.join(snapdir, args.name))
    except OSError as exc:
        raise CliError(f"snap {args.action} {args.pool} {args.name or ''}: "
                       f"{exc.strerror}".replace("  ", " ")) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radosfs", description="Use and inspect radosfs mounts "
                                "(see radosfs(1)); mount with mount.radosfs(8).")
    p.add_argument("-V", "--version", action="version", version=f"radosfs {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("status", help="mounts, cluster, pools, dirty bytes, errors")
    s.add_argument("mountpoint", nargs="?")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("stats", help="the mount's counters (see radosfs(1) for the fields)")
    s.add_argument("--json", action="store_true", help="as JSON, as /.radosfs-stats has them")
    s.add_argument("mountpoint", nargs="?")
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("flush", help="write back every dirty file of the mount")
    s.add_argument("mountpoint", nargs="?")
    s.set_defaults(func=cmd_flush)
    s = sub.add_parser("snap", help="pool snapshots (mkdir/ls/rmdir under POOL/.snap)")
    s.add_argument("action", choices=("create", "list", "remove"))
    s.add_argument("pool")
    s.add_argument("name", nargs="?")
    s.add_argument("-m", "--mount", metavar="MOUNTPOINT",
                   help="the mount to use (default: the only radosfs mount)")
    s.set_defaults(func=cmd_snap)
    sub.add_parser("mount", help="mount (the same as mount.radosfs; see its --help)",
                   add_help=False)
    sub.add_parser("cluster", help="a throwaway local cluster: start|stop|status DIR",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mount":
        from .mount import main as mount_main
        return mount_main(argv[1:])
    if argv and argv[0] == "cluster":
        from .dev.cluster import main as cluster_main
        return cluster_main(argv[1:])
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        from .mount import main as mount_main   # mount.fuse3: `radosfs SOURCE MP -o ...`
        return mount_main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"radosfs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
