"""Snapshots across the images of one pool (what `.snap` of an image pool shows and makes).

Each function does its librbd work in one worker thread; images removed meanwhile are
skipped.
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
    def scan() -> dict[str, list[SnapMember]]:
        out: dict[str, list[SnapMember]] = {}
        for img in rbd.RBD().list2(io):
            try:
                image = rbd.Image(io, img["name"], read_only=True)
            except rbd.ImageNotFound:
                continue
            try:
                for s in image.list_snaps():
                    out.setdefault(s["name"], []).append(SnapMember(
                        img["name"], img["id"], image.get_snap_timestamp(s["id"]), s["id"]))
            finally:
                image.close()
        return out

    return await bridge.run(scan)


async def snapshot_all(bridge: Bridge, io: rados.Ioctx, name: str) -> int:
    """Take snapshot `name` of every image of the pool; returns how many."""
    def take() -> int:
        n = 0
        for img in rbd.RBD().list2(io):
            try:
                image = rbd.Image(io, img["name"])
            except rbd.ImageNotFound:
                continue
            try:
                image.create_snap(name)
                n += 1
            finally:
                image.close()
        return n

    return await bridge.run(take)


async def remove_snapshots(bridge: Bridge, io: rados.Ioctx, name: str,
                           members: list[SnapMember]) -> None:
    """Remove snapshot `name` from each member image; EBUSY (and nothing removed) if one of
    them is protected, EBUSY for one with clones."""
    def remove() -> None:
        # Check every image first: a refusal must not leave the snapshot half removed.
        for m in members:
            try:
                image = rbd.Image(io, m.image, read_only=True)
            except rbd.ImageNotFound:
                continue
            try:
                if image.is_protected_snap(name):
                    raise RadosFSError(errno.EBUSY, f"snapshot {m.image}@{name} is "
                                       f"protected: unprotect it first")
            finally:
                image.close()
        for m in members:
            try:
                image = rbd.Image(io, m.image)
            except rbd.ImageNotFound:
                continue
            try:
                image.remove_snap(name)
            except (rbd.ImageBusy, rbd.InvalidArgument) as exc:
                raise RadosFSError(errno.EBUSY, f"snapshot {m.image}@{name} is "
                                   f"protected or has clones: {exc}") from None
            except rbd.ImageNotFound:
                pass
            finally:
                image.close()

    await bridge.run(remove)
