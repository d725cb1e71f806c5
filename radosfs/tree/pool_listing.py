"""Listing an object pool as directories: the base of `PoolDir` (pooldir.py).

A pool has no directories: which exist is learnt from the checked pool listing
(client/listing.py: complete, or an error -- never short), with the names that cannot be
paths left out (names.py), and kept briefly in the pool's `PoolIndex`. `entries` lists one
directory (its files stat'ed in batches, striped sets shown as one file); after a pool
snapshot, names the listing gives are confirmed by stat (`may_list_ghosts`).
"""
from __future__ import annotations

import errno
import logging
import time

import rados
import trio

from ..client.bridge import concurrently
from ..errors import RadosFSError
from ..store.ownership import FLAG_OBJECT, NO_OVERRIDE, Ownership, read_many
from ..store.rados_ops import stat_answer, stat_object, stat_submit
from ..store.striper import StripedData, piece_name, read_head, split_piece
from .base import DirNode, FileNode
from .names import NSDIR, SNAPDIR, Skipped, shown_names
from .pool_state import INDEX_MIN_TTL, PoolIndex, PoolView, parent_dirs

log = logging.getLogger(__name__)

LIST_CHUNK = 1000          # names stat'ed and shown per batch of a listing


class PoolListing(DirNode):
    """What a directory of an object pool lists (PoolDir adds lookup and changes)."""
    pool: str
    prefix: str
    snap: str | None
    view: PoolView | None

    async def ioctx(self) -> rados.Ioctx:
        raise NotImplementedError

    def file_node(self, oid: str) -> FileNode:
        raise NotImplementedError

    def dir_node(self, prefix: str) -> DirNode:
        raise NotImplementedError

    async def index(self) -> PoolIndex:
        idx = self.fs.pool_index(self.pool, self.snap)
        async with idx.lock:
            if not idx.fresh():
                io = await self.ioctx()
                started = time.monotonic()
                listing = await self._listing()
                if self.snap is None:
                    idx.learn(listing, started)
                names = [n for n in listing if "/" in n]
                if await self.may_list_ghosts():
                    names = list(await self.existing(io, names))
                idx.dirs = self._dirs_of(names)
                took = time.monotonic() - started
                idx.stamp = time.monotonic()
                idx.ttl = max(INDEX_MIN_TTL, 20 * took)
        return idx

    async def _listing(self, skipped: Skipped | None = None) -> list[str]:
        """The checked listing of the pool (client/listing.py: complete, or an error),
        less the names that cannot be paths (counted in `skipped` when under this
        directory). Always of HEAD: at a snapshot, names must be confirmed by stat."""
        raw = await self.fs.conn.list_names(self.pool)
        return shown_names(raw, skipped, self.prefix.encode())

    @staticmethod
    def _dirs_of(names) -> set[str]:
        """The directories the (showable) names imply, less those under the pool's
        reserved top-level names (lookup never resolves them as directories)."""
        dirs: set[str] = set()
        for name in names:
            if name.partition("/")[0] in (SNAPDIR, NSDIR, FLAG_OBJECT):
                continue
            dirs.update(parent_dirs(name))
        return dirs

    async def entries(self):
        """The directory's listing, from one checked pool listing taken whole first: a
        listing that fails is an error before anything is shown, never a short list.

        Names that cannot be paths are skipped with one log line per listing; a name that
        is both a file and a directory (objects `a` and `a/b`) shows as the file, as
        lookup resolves it (docs/layout.md)."""
        io = await self.ioctx()
        skipped = Skipped()
        started = time.monotonic()
        names = await self._listing(skipped)
        if self.snap is None and self.fs.options.negative_timeout > 0:
            # A listing is often followed by creates in the same directory (rsync, cp -r).
            idx = self.fs.pool_index(self.pool)
            idx.track(self.prefix)
            idx.learn(names, started)
        plen = len(self.prefix)
        ghosts = await self.may_list_ghosts()
        members: dict[str, list[str]] = {}  # directory shown here -> names under it
        files: list[str] = []
        heads: list[str] = []
        pieces: list[tuple[str, str]] = []  # (base, name) of pieces other than 0
        for oid in names:
            if not oid.startswith(self.prefix) or len(oid) == plen:
                continue
            rest = oid[plen:]
            first, slash, _ = rest.partition("/")
            if not plen and first in (SNAPDIR, NSDIR, FLAG_OBJECT):
                if first != FLAG_OBJECT or slash:  # radosfs's own flag is not news
                    skipped.add(oid.encode(), f"hidden by the reserved name {first}")
                continue
            if slash:
                members.setdefault(first, []).append(oid)
                continue
            piece = split_piece(rest)
            if piece is None:
                files.append(rest)
            elif piece[1] == 0:
                heads.append(rest)
            else:  # hidden if part of a striped set shown here, else a file of its own
                pieces.append((piece[0], rest))
        if ghosts and members:  # shown once one object under it really exists
            found = await self.existing(io, [o for group in members.values() for o in group])
            members = {d: group for d, group in members.items() if found & set(group)}
        shown_files: set[str] = set()
        items = [(n, False) for n in files] + [(h, True) for h in heads]
        striped_heads = {split_piece(h)[0] for h in heads}  # type: ignore[index]
        start = 0
        while start < len(items) or pieces:
            part = items[start:start + LIST_CHUNK]
            batch = []
            for entry in await self._stat_files(io, [n for n, head in part if not head],
                                                [n for n, head in part if head]):
                if entry[0] in shown_files:  # a plain `x` beside a striped `x`: lookup
                    continue                 # resolves the plain one, listed first
                shown_files.add(entry[0])
                batch.append(entry)
            start += len(part)
            if start >= len(items) and pieces:
                # Lookup resolves any object by its name: a piece lookalike with no striped
                # file of its own shown here is listed as the file it is.
                items.extend((name, False) for base, name in pieces
                             if not (base in striped_heads and base in shown_files))
                pieces = []
            if batch:
                yield batch
        batch = []
        for first in members:
            if first in shown_files:
                for oid in members[first]:
                    skipped.add(oid.encode(), f"under {self.prefix}{first}, which is a file")
                continue
            node = self.dir_node(self.prefix + first + "/")
            batch.append((first, node, await node.attributes()))
        if batch:
            yield batch
        line = skipped.line(self.pool, self.prefix)
        if line:
            log.info("%s", line)
        if not ghosts:
            idx = self.fs.pool_index(self.pool, self.snap)
            idx.dirs = self._dirs_of(names)
            idx.stamp = time.monotonic()

    async def may_list_ghosts(self) -> bool:
        """Whether the pool listing may name objects that do not exist here.

        A listing is always of HEAD (librados ignores the read snapshot), and once a pool
        has pool snapshots, HEAD keeps the names of objects deleted after one (their
        clones survive; they stat as ENOENT). Then every name must be checked by stat.
        """
        if self.snap is not None:
            return True
        idx = self.fs.pool_index(self.pool)
        if time.monotonic() - idx.snaps_checked > INDEX_MIN_TTL:
            io = await self.ioctx()
            idx.has_snaps = bool(await self.fs.bridge.run(lambda: list(io.list_snaps())))
            idx.snaps_checked = time.monotonic()
        return idx.has_snaps

    async def existing(self, io: rados.Ioctx, oids: list[str]) -> set[str]:
        """Those of `oids` that exist (at this view's snapshot), stat'ed in one batch."""
        results = await self.fs.bridge.aio_many([stat_submit(io, o) for o in oids])
        return {oid for oid, res in zip(oids, results) if stat_answer(res) is not None}

    async def _stat_files(self, io: rados.Ioctx, names: list[str], heads: list[str]):
        """Stat a batch of objects concurrently (not one by one): `ls -l` of a big pool.

        `heads` are names like `x.0000000000000000`: shown as the striped file `x` when
        they carry a striper layout, else as themselves.
        """
        out: list = [None] * (len(names) + len(heads))
        bridge = self.fs.bridge
        owners: dict[str, Ownership] = {}

        async def fetch_owners() -> None:
            if not await self.fs.has_overrides(self.pool):
                return
            oids = [self.prefix + n for n in names] + [self.prefix + h for h in heads]
            owners.update(await read_many(bridge, io, oids))

        async def plain_all() -> None:
            oids = [self.prefix + name for name in names]
            stats = await bridge.aio_many([stat_submit(io, o) for o in oids])
            await owners_done.wait()
            for i, (name, oid, res) in enumerate(zip(names, oids, stats)):
                st = stat_answer(res)
                if st is None:
                    continue  # deleted after a snapshot, or just now: not listed
                size, mtime = st
                node = self.file_node(oid)
                node.remember(size, mtime, owner=owners.get(oid, NO_OVERRIDE))
                out[i] = (name, node, await node.attributes_from(size, mtime))

        async def plain(i: int, name: str) -> None:
            node = self.file_node(self.prefix + name)
            try:
                size, mtime = await stat_object(bridge, io, node.oid)
            except RadosFSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # deleted after a snapshot, or just now: not listed
                raise
            await owners_done.wait()
            node.remember(size, mtime, owner=owners.get(node.oid, NO_OVERRIDE))
            out[i] = (name, node, await node.attributes_from(size, mtime))

        async def striped(i: int, head_name: str) -> None:
            base = split_piece(head_name)[0]  # type: ignore[index]
            oid = self.prefix + base
            layout = await read_head(bridge, io, oid)
            if layout is None:
                await plain(i, head_name)
                return
            try:
                _, mtime = await stat_object(bridge, io, piece_name(oid, 0))
            except RadosFSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            node = self.file_node(oid)
            await owners_done.wait()
            node.remember(layout[1], mtime, owners.get(self.prefix + head_name, NO_OVERRIDE),
                          striped=StripedData(bridge, io, oid, *layout))
            out[i] = (base, node, await node.attributes_from(layout[1], mtime))

        owners_done = trio.Event()

        async def owners_task() -> None:
            try:
                await fetch_owners()
            finally:
                owners_done.set()

        async with concurrently() as n:
            n.start_soon(owners_task)
            n.start_soon(plain_all)
            for i, name in enumerate(heads, len(names)):
                n.start_soon(striped, i, name)
        return [x for x in out if x is not None]
