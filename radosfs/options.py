"""Mount options: parsed once, read everywhere. Unknown options are an error."""
from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field

# FUSE/mount(8) options passed to the kernel as they are.
FUSE_FLAGS = {"allow_other", "allow_root", "auto_unmount", "default_permissions"}
# Kernel mount flags, passed on (libfuse turns them into MS_* flags). FUSE mounts are
# nosuid,nodev unless `suid`/`dev` are given (libfuse's default, kept).
KERNEL_FLAGS = {"noexec", "exec", "nosuid", "suid", "nodev", "dev", "noatime", "atime",
                "dirsync", "sync"}
# Generic mount(8) options that mean nothing here but must not be an error in fstab.
# (`relatime` and friends are radosfs's atime choices below; libfuse refuses them.)
IGNORED = {"auto", "noauto", "user", "nouser", "users", "owner", "nofail", "_netdev",
           "defaults", "nostrictatime", "nodiratime", "diratime", "lazytime", "nolazytime",
           "async", "loop", "comment"}
IGNORED_PREFIXES = ("x-", "comment=", "_")
# atime choices: what opening a file for reading does to its stored atime
ATIME = {"noatime": "noatime", "relatime": "relatime", "atime": "strictatime",
         "strictatime": "strictatime", "norelatime": "strictatime"}
# What to do with pools that belong to another application (cephfs, rgw, the mgr).
FOREIGN_CHOICES = ("ro", "rw", "hide")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The librados admin socket of a mount ($cluster, $name and $pid expanded by librados);
# the directory is made (0700) at mount time.
ADMIN_SOCKET_DIR = "/run/radosfs"
ADMIN_SOCKET = ADMIN_SOCKET_DIR + "/$cluster-$name.$pid.asok"


class OptionError(ValueError):
    pass


@dataclass
class MountOptions:
    conf: str | None = None
    name: str = "client.admin"
    keyring: str | None = None
    ro: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    debug: bool = False
    allow_pool_delete: bool = False
    cache_size: int = 512 << 20
    connect_timeout: float = 10.0
    op_timeout: float = 30.0
    attr_timeout: float = 1.0
    #: how long a listing may answer "no such name" without asking the cluster (0: never)
    negative_timeout: float = 0.0
    readahead_kb: int = 1024
    fuse: set[str] = field(default_factory=set)
    #: noatime (default: reads never write), relatime or strictatime (see docs/options.md)
    atime: str = "noatime"
    kernel: dict[str, str] = field(default_factory=dict)   # flag family -> flag, last wins
    fsname: str | None = None
    subtype: str = "radosfs"
    # Ceph's own vocabulary
    cluster: str = "ceph"
    mon_host: str | None = None
    secretfile: str | None = None
    ceph: dict[str, str] = field(default_factory=dict)    # ceph.OPTION=VALUE pass-through
    # logging
    log: str | None = None          # a path, "stderr" or "syslog"
    log_level: str | None = None
    # scope
    pools: list[str] = field(default_factory=list)        # empty: every pool
    foreign_pools: str = "ro"
    #: the RADOS namespace every pool is shown in (`rados -N`; in image pools the RBD
    #: namespace, `rbd --namespace`); "" = the default one, with POOL/.ns/ and RBD
    #: namespace directories
    namespace: str = ""
    # observability
    metrics_port: int | None = None   # Prometheus text on 127.0.0.1:PORT (0: any free)
    metrics_file: str | None = None   # ... and/or written to PATH (node_exporter textfile)
    admin_socket: str | None = None   # None: the default (see ADMIN_SOCKET), "" = none

    def kernel_flags(self) -> set[str]:
        return set(self.kernel.values())

    def file_mode(self) -> int:
        return 0o666 & ~self.umask

    def dir_mode(self) -> int:
        return 0o777 & ~self.umask


HELP = {
    "conf=PATH": "ceph.conf to use (default: $CEPH_CONF, then /etc/ceph/$cluster.conf)",
    "cluster=NAME": "cluster name: /etc/ceph/NAME.conf and NAME.* keyrings (default ceph)",
    "mon_host=ADDR[;ADDR]": "monitors to contact (no ceph.conf needed with a key)",
    "id=ID / name=TYPE.ID": "cephx user (default client.admin); id=foo means client.foo",
    "keyring=PATH": "keyring with the user's key (default: from ceph.conf)",
    "secretfile=PATH": "file holding just the user's base64 key (as mount.ceph takes it)",
    "ceph.OPTION=VALUE": "any Ceph client option, e.g. ceph.ms_mode=secure",
    "ro / rw": "read-only (every change fails with EROFS) / read-write; the last one wins",
    "allow_other": "let other users use the mount (implies default_permissions)",
    "allow_root": "let root use the mount",
    "default_permissions": "let the kernel check permissions against mode/uid/gid",
    "auto_unmount": "unmount when the daemon dies",
    "noexec,nosuid,nodev,noatime,...": "kernel mount flags, passed to the kernel",
    "fsname=NAME / subtype=NAME": "what /proc/mounts shows as source / type fuse.NAME",
    "uid=USER / gid=GROUP": "owner shown for everything: a number or a name (default: you)",
    "umask=OCTAL": "permission bits to clear from 0666 files / 0777 directories (default 022)",
    "cache_size=SIZE": "page cache budget, e.g. 512M (default), 2G",
    "allow_pool_delete": "let rmdir remove an empty pool (otherwise EPERM)",
    "pools=A:B": "mount only these pools (colon-separated; repeatable)",
    "foreign_pools=ro|rw|hide": "pools of other applications (cephfs, rgw, mgr): default ro",
    "namespace=NS": "show and write only RADOS namespace NS of every pool (rados -N NS; "
                    "the RBD namespace NS in image pools)",
    "connect_timeout=SECONDS": "give up connecting after this long (default 10)",
    "op_timeout=SECONDS": "a cluster operation fails with EIO after this long (default 30)",
    "attr_timeout=SECONDS": "how long the kernel caches names and attributes (default 1)",
    "negative_timeout=SECONDS": "how long a listing may answer that a name does not exist, "
                                "without asking the cluster (default 0: never)",
    "noatime / relatime / strictatime": "whether opening a file for reading stores a new "
                                        "atime (default noatime: reads never write)",
    "readahead_kb=N": "kernel read-ahead for the mount, in KiB (default 1024; root only)",
    "log=PATH|stderr|syslog": "where the daemon logs (default: see mount.radosfs(8))",
    "log_level=LEVEL": "debug, info (default), warning or error",
    "debug": "log every request (log_level=debug); does not keep the command in front",
    "metrics_port=PORT": "serve Prometheus metrics on http://127.0.0.1:PORT/metrics "
                         "(0: any free port, shown in the stats file)",
    "metrics_file=PATH": "write Prometheus metrics to PATH every 10 s (node_exporter's "
                         "textfile collector: a *.prom file); removed at unmount",
    "admin_socket=PATH|none": "librados admin socket (default "
                              "/run/radosfs/$cluster-$name.$pid.asok): ceph daemon PATH ...",
}


def parse_size(text: str, what: str = "size") -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        return int(float(t[:-1] if unit else t) * units[unit])
    except ValueError:
        raise OptionError(f"{what} must be a size like 512M or 2G, not {text!r}") from None


def parse_options(opts: list[str], base: MountOptions | None = None) -> MountOptions:
    """Parse `-o` option strings (each may hold a comma-separated list). Later options
    win over earlier ones, as with mount(8)."""
    mo = base or MountOptions()
    for chunk in opts:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            try:
                _apply(mo, key, value, bool(eq))
            except OptionError:
                raise
            except (ValueError, TypeError) as exc:
                raise OptionError(f"bad mount option {_shown(item)}: {exc}") from None
    return mo


def _shown(item: str) -> str:
    """An option as an error message may show it: never a secret."""
    key = item.partition("=")[0]
    return f"{key}=..." if "secret" in key or key.endswith("key") else repr(item)


def _number(key: str, value: str, conv, what: str):
    try:
        return conv(value)
    except ValueError:
        raise OptionError(f"{key} must be {what}, not {value!r}") from None


def _user(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise OptionError(f"uid must be a number or a user name; there is no user "
                          f"{value!r}") from None


def _group(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise OptionError(f"gid must be a number or a group name; there is no group "
                          f"{value!r}") from None


def _apply(mo: MountOptions, key: str, value: str, has_value: bool) -> None:
    def need() -> str:
        if not has_value or not value:
            raise OptionError(f"option {key} needs a value ({key}=...)")
        return value

    def positive(conv=float) -> float:
        v = _number(key, need(), conv, "a number of seconds" if conv is float
                    else "a whole number")
        if v <= 0:
            raise OptionError(f"{key} must be more than 0, not {value!r}")
        return v

    if key == "conf":
        mo.conf = need()
    elif key == "id":
        mo.name = f"client.{need()}"
    elif key == "name":
        v = need()
        mo.name = v if "." in v else f"client.{v}"
    elif key == "keyring":
        mo.keyring = need()
    elif key == "secretfile":
        mo.secretfile = need()
    elif key in ("secret", "key"):
        raise OptionError(f"{key}= would show the key in ps and in the mount table: put it "
                          f"in a file and use secretfile=PATH (or keyring=PATH)")
    elif key == "cluster":
        mo.cluster = need()
    elif key in ("mon_host", "mon_addr"):
        mo.mon_host = need()   # several: separated by ; or spaces, as in ceph.conf
    elif key.startswith("ceph."):
        opt = key[len("ceph."):]
        if not opt:
            raise OptionError("ceph.OPTION=VALUE needs an option name")
        if opt in ("conf", "id", "name", "keyring", "mon_host", "cluster"):
            _apply(mo, opt, value, has_value)   # ceph-fuse's fstab spelling
        else:
            mo.ceph[opt.replace("-", "_")] = value if has_value else "true"
    elif key == "ro":
        mo.ro = True
    elif key == "rw":
        mo.ro = False
    elif key == "uid":
        mo.uid = _user(need())
    elif key == "gid":
        mo.gid = _group(need())
    elif key == "umask":
        v = need()
        if not v or any(c not in "01234567" for c in v) or int(v, 8) > 0o777:
            raise OptionError(f"umask must be octal digits like 022, not {v!r}")
        mo.umask = int(v, 8)
    elif key == "debug":
        mo.debug = True
    elif key == "allow_pool_delete":
        mo.allow_pool_delete = True
    elif key == "cache_size":
        size = parse_size(need(), "cache_size")
        if size < (1 << 20):
            raise OptionError(f"cache_size must be at least 1M, not {value!r}")
        mo.cache_size = size
    elif key == "connect_timeout":
        mo.connect_timeout = positive()
    elif key == "op_timeout":
        mo.op_timeout = positive()
    elif key == "attr_timeout":
        v = _number(key, need(), float, "a number of seconds")
        if v < 0:
            raise OptionError(f"attr_timeout must be 0 or more, not {value!r}")
        mo.attr_timeout = v
    elif key == "negative_timeout":
        v = _number(key, need(), float, "a number of seconds")
        if v < 0:
            raise OptionError(f"negative_timeout must be 0 or more, not {value!r}")
        mo.negative_timeout = v
    elif key == "readahead_kb":
        mo.readahead_kb = int(positive(int))
    elif key == "fsname":
        mo.fsname = need()
    elif key == "subtype":
        mo.subtype = need()
    elif key == "pools":
        mo.pools += [p for p in need().split(":") if p]
    elif key == "foreign_pools":
        if need() not in FOREIGN_CHOICES:
            raise OptionError(f"foreign_pools must be one of {', '.join(FOREIGN_CHOICES)}, "
                              f"not {value!r}")
        mo.foreign_pools = value
    elif key == "namespace":
        if not has_value:
            raise OptionError("namespace needs a value: namespace=NS (namespace= for the "
                              "default one)")
        mo.namespace = value
    elif key == "log":
        mo.log = need()
    elif key == "log_level":
        if need().lower() not in LOG_LEVELS:
            raise OptionError(f"log_level must be one of {', '.join(LOG_LEVELS)}, "
                              f"not {value!r}")
        mo.log_level = value.lower()
    elif key == "metrics_port":
        port = _number(key, need(), int, "a TCP port number")
        if not 0 <= port <= 65535:
            raise OptionError(f"metrics_port must be a TCP port (0-65535), not {value!r}")
        mo.metrics_port = port
    elif key == "metrics_file":
        mo.metrics_file = need()
    elif key == "admin_socket":
        mo.admin_socket = "" if need() == "none" else value
    elif key in FUSE_FLAGS:
        mo.fuse.add(key)
    elif key in ATIME:
        mo.atime = ATIME[key]
        if key == "noatime":   # the kernel's flag too (libfuse takes no other atime flag)
            mo.kernel["atime"] = "noatime"
        else:
            mo.kernel.pop("atime", None)
    elif key in KERNEL_FLAGS:
        family = key[2:] if key.startswith("no") else key
        mo.kernel[family] = key
    elif key in IGNORED or key.startswith(IGNORED_PREFIXES):
        return
    else:
        raise OptionError(f"unknown mount option {key!r} (see mount.radosfs --help)")
