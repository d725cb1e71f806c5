"""Which names the tree can show and accept: the limits of a Linux filesystem against the
names RADOS objects can have."""
from __future__ import annotations

import errno

from ..errors import RadosFSError

SNAPDIR = ".snap"
NSDIR = ".ns"              # POOL/.ns/NAME/: the pool's RADOS namespace NAME
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


# ---- object names as paths (docs/layout.md "Names that cannot be paths") ---------------

NOT_UTF8 = "not UTF-8"
BAD_COMPONENT = "an empty, '.' or '..' component (or a leading '/')"
LONG_COMPONENT = "a component over 255 bytes"


def path_problem(raw: bytes) -> str | None:
    """Why the object name `raw` cannot be shown as a path, or None if it can.

    A name can be shown when it is UTF-8 and splits at '/' into components that are
    non-empty, not '.' or '..', and at most 255 bytes each; one trailing '/' makes it a
    directory marker. A newline or any other byte but '/' and NUL is fine on Linux."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    parts = raw.split(b"/")
    if len(parts) > 1 and parts[-1] == b"":
        parts = parts[:-1]  # a directory marker
    if any(p in (b"", b".", b"..") for p in parts):
        return BAD_COMPONENT
    if any(len(p) > MAX_NAME_COMPONENT for p in parts):
        return LONG_COMPONENT
    return None


def shows_as_component(raw: bytes) -> bool:
    """Whether a name (a namespace's) can be one directory entry: a path of one component."""
    return path_problem(raw) is None and b"/" not in raw


class Skipped:
    """The names one listing could not show, for its one log line."""

    EXAMPLES = 3

    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, list[bytes]] = {}

    def add(self, raw: bytes, reason: str) -> None:
        self.count += 1
        examples = self.reasons.setdefault(reason, [])
        if len(examples) < self.EXAMPLES:
            examples.append(raw)

    def line(self, pool: str, where: str) -> str | None:
        if not self.count:
            return None
        why = "; ".join(f"{reason}: {', '.join(repr(r)[1:] for r in raws)}"
                        + (" ..." if len(raws) == self.EXAMPLES else "")
                        for reason, raws in self.reasons.items())
        return (f"pool {pool}: {self.count} object name(s) under /{where} not shown "
                f"(they cannot be paths; see docs/layout.md): {why}")


def shown_names(raw_names: list[bytes], skipped: Skipped | None = None,
                prefix: bytes = b"") -> list[str]:
    """The names of a listing that can be paths, decoded; the others (among those under
    `prefix`) are counted in `skipped`."""
    out = []
    for raw in raw_names:
        problem = path_problem(raw)
        if problem is None:
            out.append(raw.decode("utf-8"))
        elif skipped is not None and raw.startswith(prefix):
            skipped.add(raw, problem)
    return out
