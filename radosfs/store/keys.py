"""The one place that says what identifies a stored file: the page cache files its pages
under this key, so two opens of one object (or one image) share them."""
from __future__ import annotations

from typing import NamedTuple

OBJECT = "obj"
IMAGE = "rbd"


class StoreKey(NamedTuple):
    kind: str          # OBJECT (a plain object or a striped set) or IMAGE
    pool: str
    name: str          # the object name, or the image id (a rename keeps an image's pages)
    view: str | None   # None at HEAD; else the snapshot, as "name@id" (never reused)
    namespace: str = ""  # the RADOS (or RBD) namespace; "" = the default one

    @classmethod
    def object(cls, pool: str, oid: str, view: str | None = None,
               namespace: str = "") -> StoreKey:
        return cls(OBJECT, pool, oid, view, namespace)

    @classmethod
    def image(cls, pool: str, image_id: str, snapshot: str | None = None,
              snap_id: int | None = None, namespace: str = "") -> StoreKey:
        return cls(IMAGE, pool, image_id,
                   None if snapshot is None else f"{snapshot}@{snap_id}", namespace)

    def at_head_of(self, kind: str, pool: str) -> bool:
        """Writable data of `pool`, in any namespace (what a snapshot of the pool must
        include: a pool snapshot holds every namespace)."""
        return self.kind == kind and self.pool == pool and self.view is None
