"""Which names the tree can show and accept: the limits of a Linux filesystem against the
names RADOS objects can have."""
from __future__ import annotations

import errno

from ..errors import RadosFSError

SNAPDIR = ".snap"
MAX_NAME_COMPONENT = 255   # bytes, as every Linux filesystem
MAX_OBJECT_NAME = 2048     # osd_max_object_name_len's default


def check_component(name: str) -> None:
    if len(name.encode()) > MAX_NAME_COMPONENT:
        raise RadosFSError(errno.ENAMETOOLONG, "name component longer than 255 bytes")
    if name in ("", ".", "..") or "/" in name:
        raise RadosFSError(errno.EINVAL, f"bad name {name!r}")


def check_object_name(name: str) -> None:
    if len(name.encode()) > MAX_OBJECT_NAME:
        raise RadosFSError(errno.ENAMETOOLONG, f"object name longer than {MAX_OBJECT_NAME}")


def valid_path_name(name: str) -> bool:
    """Whether an object name can be shown as a path (no empty, '.' or '..' components)."""
    parts = name.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # a directory marker
    return bool(parts) and all(p not in ("", ".", "..") and len(p.encode()) <= 255
                               for p in parts)
