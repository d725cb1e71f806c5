"""Mount options: parsed once, read everywhere. Unknown options are an error."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

# FUSE/mount(8) options passed to the kernel as they are.
FUSE_FLAGS = {"allow_other", "allow_root", "auto_unmount", "default_permissions"}
# Generic mount(8) options that mean nothing here but must not be an error in fstab.
IGNORED = {"rw", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev", "defaults",
           "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "sync"}
# atime choices: what opening a file for reading does to its stored atime
ATIME = {"noatime": "noatime", "relatime": "relatime", "atime": "strictatime",
         "strictatime": "strictatime", "norelatime": "strictatime"}


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
    readahead_kb: int = 1024
    fuse: set[str] = field(default_factory=set)
    #: noatime (default: reads never write), relatime or strictatime (see docs/options.md)
    atime: str = "noatime"

    def file_mode(self) -> int:
        return 0o666 & ~self.umask

    def dir_mode(self) -> int:
        return 0o777 & ~self.umask


HELP = {
    "conf=PATH": "ceph.conf to use (default: $CEPH_CONF, then /etc/ceph/ceph.conf)",
    "id=ID / name=TYPE.ID": "cephx user (default client.admin); id=foo means client.foo",
    "keyring=PATH": "keyring with the user's key (default: from ceph.conf)",
    "ro": "mount read-only: every change fails with EROFS",
    "rw": "read-write (the default)",
    "allow_other": "let other users use the mount (implies default_permissions)",
    "allow_root": "let root use the mount",
    "default_permissions": "let the kernel check permissions against mode/uid/gid",
    "auto_unmount": "unmount when the daemon dies",
    "uid=N / gid=N": "owner shown for every file and directory (default: mounting user)",
    "umask=OCTAL": "permission bits to clear from 0666 files / 0777 directories (default 022)",
    "cache_size=SIZE": "page cache budget, e.g. 512M (default), 2G",
    "allow_pool_delete": "let rmdir remove an empty pool (otherwise EPERM)",
    "connect_timeout=SECONDS": "give up connecting after this long (default 10)",
    "op_timeout=SECONDS": "a cluster operation fails with EIO after this long (default 30)",
    "attr_timeout=SECONDS": "how long the kernel caches names and attributes (default 1)",
    "noatime / relatime / strictatime": "whether opening a file for reading stores a new "
                                        "atime (default noatime: reads never write)",
    "readahead_kb=N": "kernel read-ahead for the mount, in KiB (default 1024; root only)",
    "debug": "log every request (and stay in the foreground)",
}


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        return int(float(t[:-1] if unit else t) * units[unit])
    except ValueError:
        raise OptionError(f"bad size {text!r}") from None


def parse_options(opts: list[str], base: MountOptions | None = None) -> MountOptions:
    """Parse `-o` option strings (each may hold a comma-separated list)."""
    mo = base or MountOptions()
    for chunk in opts:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            try:
                _apply(mo, key, value, bool(eq))
            except (ValueError, TypeError) as exc:
                raise OptionError(f"bad mount option {item!r}: {exc}") from None
    return mo


def _apply(mo: MountOptions, key: str, value: str, has_value: bool) -> None:
    def need() -> str:
        if not has_value or not value:
            raise OptionError(f"option {key} needs a value ({key}=...)")
        return value

    if key == "conf":
        mo.conf = need()
    elif key == "id":
        mo.name = f"client.{need()}"
    elif key == "name":
        v = need()
        mo.name = v if "." in v else f"client.{v}"
    elif key == "keyring":
        mo.keyring = need()
    elif key == "ro":
        mo.ro = True
    elif key == "uid":
        mo.uid = int(need())
    elif key == "gid":
        mo.gid = int(need())
    elif key == "umask":
        mo.umask = int(need(), 8) & 0o777
    elif key == "debug":
        mo.debug = True
    elif key == "allow_pool_delete":
        mo.allow_pool_delete = True
    elif key == "cache_size":
        mo.cache_size = parse_size(need())
    elif key == "connect_timeout":
        mo.connect_timeout = float(need())
    elif key == "op_timeout":
        mo.op_timeout = float(need())
    elif key == "attr_timeout":
        mo.attr_timeout = float(need())
    elif key == "readahead_kb":
        mo.readahead_kb = int(need())
    elif key in FUSE_FLAGS:
        mo.fuse.add(key)
    elif key in ATIME:
        mo.atime = ATIME[key]
    elif key in IGNORED:
        return
    else:
        raise OptionError(f"unknown mount option {key!r} (see mount.radosfs --help)")
