"""Node keys and the inode table: a name gets the same inode number for the life of the
mount, and the keys that say what a node is are built here and nowhere else."""
from __future__ import annotations

import errno
from typing import Callable, NamedTuple, Protocol, TypeVar, cast

import pyfuse3

from ..errors import RadosFSError

ROOT, STATS = "root", "stats"
POOL, IMAGE_POOL = "pool", "imagepool"        # a directory of an object pool; an image pool
SNAP_ROOT, IMAGE_SNAP = "snaproot", "imagesnap"
OBJECT, IMAGE = "obj", "image"
NAMESPACES = "namespaces"                     # POOL/.ns: an object pool's RADOS namespaces


class NodeKey(NamedTuple):
    kind: str
    pool: str = ""
    view: str | None = None   # None at HEAD; else which snapshot ("name@id" or a name)
    path: str = ""            # directory prefix, object name or image name
    namespace: str = ""       # the RADOS (or RBD) namespace; "" = the default one

    def describe(self) -> str:
        """The path a log line names for this node."""
        space = f"[{self.namespace}]" if self.namespace else ""
        return "/".join(p for p in (self.pool + space, self.view, self.path) if p) or self.kind


def image_key(pool: str, name: str, snapshot: str | None = None,
              snap_id: int | None = None, namespace: str = "") -> NodeKey:
    """An image file, at HEAD or at one snapshot (named with its id: never reused)."""
    return NodeKey(IMAGE, pool, None if snapshot is None else f"{snapshot}@{snap_id}", name,
                   namespace)


class Numbered(Protocol):
    ino: int
    key: NodeKey


N = TypeVar("N", bound=Numbered)


class InodeTable:
    """Stable inode numbers for node keys (never reused during a mount)."""

    def __init__(self) -> None:
        self.by_ino: dict[int, Numbered] = {}
        self.by_key: dict[NodeKey, Numbered] = {}
        self._next = pyfuse3.ROOT_INODE + 1

    def add_root(self, node: Numbered) -> None:
        node.ino = pyfuse3.ROOT_INODE
        self.by_ino[node.ino] = node
        self.by_key[node.key] = node

    def get(self, key: NodeKey, make: Callable[[], N]) -> N:
        node = self.by_key.get(key)
        if node is None:
            node = make()
            node.ino = self._next
            self._next += 1
            self.by_key[key] = node
            self.by_ino[node.ino] = node
        return cast(N, node)

    def node(self, ino: int) -> Numbered:
        node = self.by_ino.get(ino)
        if node is None:
            raise RadosFSError(errno.ENOENT, f"stale inode {ino}")
        return node

    def drop(self, key: NodeKey) -> None:
        """Forget the name (the inode stays valid for open handles until forget)."""
        self.by_key.pop(key, None)

    def drop_where(self, match: Callable[[NodeKey], bool]) -> None:
        for key in [k for k in self.by_key if match(k)]:
            self.by_key.pop(key, None)

    def rekey(self, node: Numbered, key: NodeKey) -> None:
        self.by_key.pop(node.key, None)
        node.key = key
        self.by_key[key] = node
