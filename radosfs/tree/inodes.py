"""Node keys and the inode table: a name keeps its inode number for as long as the kernel
knows the inode (until it sends `forget`), and the keys that say what a node is are built
here and nowhere else."""
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
    """Inode numbers for node keys (never reused during a mount), with the kernel's lookup
    count of each: a node the kernel has forgotten (count back to zero) is dropped, so the
    table holds what the kernel holds, not every name the mount has ever shown. A name
    looked up again after that gets a new node and a new number."""

    def __init__(self) -> None:
        self.by_ino: dict[int, Numbered] = {}
        self.by_key: dict[NodeKey, Numbered] = {}
        #: the kernel's lookup count per inode (lookup, create, mkdir, readdirplus entries)
        self.lookups: dict[int, int] = {}
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

    def seen(self, node: Numbered) -> None:
        """The kernel was just given `node` (a lookup count more). A node forgotten while
        the request that returns it was under way is taken back in."""
        ino = node.ino
        self.lookups[ino] = self.lookups.get(ino, 0) + 1
        if ino not in self.by_ino:
            self.by_ino[ino] = node
            self.by_key.setdefault(node.key, node)

    def forget(self, ino: int, nlookup: int) -> Numbered | None:
        """The kernel dropped `nlookup` references: the node, once it has none left (the
        caller then `remove`s it unless it must stay), else None."""
        left = self.lookups.get(ino, 0) - nlookup
        if left > 0:
            self.lookups[ino] = left
            return None
        self.lookups.pop(ino, None)
        if ino == pyfuse3.ROOT_INODE:
            return None
        return self.by_ino.get(ino)

    def remove(self, node: Numbered) -> None:
        """Drop a node the kernel no longer knows: its number and (if still its) its name."""
        if self.lookups.get(node.ino, 0) > 0:
            return
        if self.by_ino.get(node.ino) is node:
            del self.by_ino[node.ino]
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]

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
