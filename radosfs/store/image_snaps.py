"""Snapshots across the images of one pool (what `.snap` of an image pool shows and makes).

Each function works image by image, one bounded worker-thread call per image (a pool of
many images takes as long as it takes, but no single call waits past op_timeout); images
removed meanwhile are skipped.
"""
from __future__ import annotations

import errno
from datetime import datetime
from typing import NamedTuple

import rados
import rbd

from ..client.bridge import Bridge
from ..errors import RadosFSError


class SnapMember(NamedTuple):
    """One image that has a given snapshot."""
    image: str
    image_id: str
    stamp: datetime
    snap_id: int


async def snapshots_by_name(bridge: Bridge, io: rados.Ioctx) -> dict[str, list[SnapMember]]:
    """{snapshot name: [SnapMember, ...]} over the pool."""
    def one(img: dict) -> list[tuple[str, SnapMember]]:
        try:
            image = rbd.Image(io, img["name"], read_only=True)
        except rbd.ImageNotFound:
            return []
        try:
            return [(s["name"], SnapMember(img["name"], img["id"],
                                           image.get_snap_timestamp(s["id"]), s["id"]))
                    for s in image.list_snaps()]
        finally:
            image.close()

    out: dict[str, list[SnapMember]] = {}
    for img in await _images(bridge, io):
        for snap, member in await bridge.run(one, img, what=f"snapshots of {img['name']}"):
            out.setdefault(snap, []).append(member)
    return out


async def _images(bridge: Bridge, io: rados.Ioctx) -> list[dict]:
    return await bridge.run(lambda: list(rbd.RBD().list2(io)), what="RBD.list2")


async def snapshot_all(bridge: Bridge, io: rados.Ioctx, name: str) -> int:
    """Take snapshot `name` of every image of the pool; returns how many."""
    def take(img: dict) -> int:
        try:
            image = rbd.Image(io, img["name"])
        except rbd.ImageNotFound:
            return 0
        try:
            image.create_snap(name)
            return 1
        finally:
            image.close()

    n = 0
    for img in await _images(bridge, io):
        n += await bridge.run(take, img, what=f"snapshot of {img['name']}")
    return n


async def remove_snapshots(bridge: Bridge, io: rados.Ioctx, name: str,
                           members: list[SnapMember]) -> None:
    """Remove snapshot `name` from each member image; EBUSY (and nothing removed) if one of
    them is protected, EBUSY for one with clones."""
    def check(m: SnapMember) -> None:
        try:
            image = rbd.Image(io, m.image, read_only=True)
        except rbd.ImageNotFound:
            return
        try:
            if image.is_protected_snap(name):
                raise RadosFSError(errno.EBUSY, f"snapshot {m.image}@{name} is "
                                   f"protected: unprotect it first")
        finally:
            image.close()

    def remove(m: SnapMember) -> None:
        try:
            image = rbd.Image(io, m.image)
        except rbd.ImageNotFound:
            return
        try:
            image.remove_snap(name)
        except (rbd.ImageBusy, rbd.InvalidArgument) as exc:
            raise RadosFSError(errno.EBUSY, f"snapshot {m.image}@{name} is "
                               f"protected or has clones: {exc}") from None
        except rbd.ImageNotFound:
            pass
        finally:
            image.close()

    # Check every image first: a refusal must not leave the snapshot half removed.
    for m in members:
        await bridge.run(check, m, what=f"check of {m.image}@{name}")
    for m in members:
        await bridge.run(remove, m, what=f"removal of {m.image}@{name}")
