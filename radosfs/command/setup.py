"""What the mount command settles before it mounts: the options resolved against the
machine (files, defaults, absolute paths), the client configuration, the mountpoint
(a dead mount left by a killed daemon is cleared) and the options libfuse gets.

Every failure here is a `MountError`: one line for the user, exit 1."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess

import pyfuse3

from ..client.connection import ClientConfig
from ..options import MountOptions, parse_options
from .exporter import admin_socket_path

log = logging.getLogger("radosfs")


class MountError(Exception):
    """A one-line reason the mount could not be made."""


def resolve_options(args: argparse.Namespace) -> MountOptions:
    mo = MountOptions()
    if args.source not in ("none", "radosfs", "ceph", ""):
        mo.name = args.source if "." in args.source else f"client.{args.source}"
    mo = parse_options(args.options, mo)
    if args.log:
        mo.log = args.log
    if mo.conf is None:
        default = f"/etc/ceph/{mo.cluster}.conf"
        mo.conf = os.environ.get("CEPH_CONF") or default
        if mo.mon_host and not os.path.isfile(mo.conf):
            mo.conf = None          # mon_host= and a key: no conf file needed
    if mo.conf is not None and not os.path.isfile(mo.conf):
        raise MountError(f"ceph configuration {mo.conf} not found (use -o conf=PATH, or "
                         f"mon_host= with keyring= or secretfile=)")
    for what, path in (("keyring", mo.keyring), ("secretfile", mo.secretfile)):
        if path is None:
            continue
        if not os.path.exists(path):
            raise MountError(f"{what} {path} not found")
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise MountError(f"cannot read {what} {path}: {exc.strerror}") from None
    for what in ("metrics_file", "admin_socket"):
        path = getattr(mo, what)
        if path:   # the daemon changes to / first
            setattr(mo, what, os.path.abspath(path))
    if mo.metrics_file:
        where = os.path.dirname(mo.metrics_file)
        if not os.path.isdir(where) or not os.access(where, os.W_OK):
            raise MountError(f"metrics_file={mo.metrics_file}: cannot write in {where} "
                             f"(it must be a writable directory)")
    if mo.log not in (None, "stderr", "syslog"):
        mo.log = os.path.abspath(mo.log)
        try:
            open(mo.log, "a").close()
        except OSError as exc:
            raise MountError(f"cannot open log file {mo.log}: {exc.strerror}") from None
    elif mo.log == "syslog" and not os.path.exists("/dev/log"):
        raise MountError("log=syslog: there is no syslog here (/dev/log is missing)")
    # The daemon changes to / before librados reads them.
    if mo.conf is not None:
        mo.conf = os.path.abspath(mo.conf)
    if mo.keyring is not None:
        mo.keyring = os.path.abspath(mo.keyring)
    if mo.secretfile is not None:
        mo.secretfile = os.path.abspath(mo.secretfile)
    return mo


def _clear_dead_mount(path: str) -> None:
    """A FUSE mount whose daemon is gone (killed) answers ENOTCONN: unmount it."""
    try:
        os.stat(path)
        return
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            return
    res = subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=30)
    if res.returncode != 0:
        raise MountError(f"mountpoint {path} is a dead mount (its daemon is gone); "
                         f"clear it with: fusermount3 -u {path}")


def key_file_warnings(mo: MountOptions) -> list[str]:
    """One warning per key file (keyring=, secretfile=) that users other than its owner
    can read, as ssh warns of a private key others can read. The key is never shown."""
    warnings = []
    for what, path in (("keyring", mo.keyring), ("secretfile", mo.secretfile)):
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o044:
            warnings.append(f"{what} {path} is readable by "
                            f"{'others' if mode & 0o004 else 'its group'} (mode "
                            f"{mode & 0o777:03o}): anyone who can read it can act as this "
                            f"user; chmod 600 it")
    return warnings


def read_secret(path: str) -> str:
    """The key of a secretfile= (just the base64 key, as mount.ceph takes it; a keyring
    file works too). Never logged, never in a message."""
    try:
        text = open(path).read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MountError(f"cannot read secretfile {path}: "
                         f"{getattr(exc, 'strerror', None) or 'not text'}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("key") and "=" in line:
            line = line.split("=", 1)[1].strip()
        if line and not line.startswith(("[", "#", ";")) and " " not in line:
            return line
    raise MountError(f"secretfile {path} holds no key")


def client_config(mo: MountOptions) -> ClientConfig:
    return ClientConfig(conf=mo.conf, name=mo.name, keyring=mo.keyring,
                        connect_timeout=mo.connect_timeout, op_timeout=mo.op_timeout,
                        cluster=mo.cluster, mon_host=mo.mon_host,
                        key=read_secret(mo.secretfile) if mo.secretfile else None,
                        ceph_options=dict(mo.ceph), admin_socket=admin_socket_path(mo))


def check_mountpoint(path: str) -> str:
    path = os.path.abspath(path)
    _clear_dead_mount(path)
    if not os.path.exists(path):
        raise MountError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"mountpoint {path} is busy (something is mounted there)")
    return path


def fuse_options(mo: MountOptions, source: str) -> set[str]:
    """What libfuse is given. The source is kept as the fsname (even `none`) so that
    mount(8) finds an fstab line mounted already: a second `mount -a` is a no-op."""
    opts = set(pyfuse3.default_options) - {"default_permissions"}
    opts |= {f"fsname={mo.fsname or source or 'none'}", f"subtype={mo.subtype}"}
    opts |= mo.fuse
    opts |= mo.kernel_flags()
    if "allow_other" in mo.fuse:
        opts.add("default_permissions")
    if mo.ro:
        opts.add("ro")
    if mo.debug:
        opts.add("debug")   # libfuse's request trace, to stderr (-f or log=stderr)
    return opts
