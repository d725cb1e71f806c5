"""The floor of the small-file rows: an in-memory filesystem on pyfuse3 + trio, with
radosfs' libfuse options and the same reply flags (keep_cache, 1 s attribute and entry
timeouts). It answers every request at once, so create and `cat` through it cost what
FUSE, pyfuse3 and trio cost per request and nothing else: what is left of radosfs' figure
is radosfs' own work and its cluster round trips.

    python -m radosfs.dev.bench.nullfs MOUNTPOINT COUNTS_JSON

serves one directory of regular files until unmounted, then writes the requests it
answered, by kind, to COUNTS_JSON (to show the kernel sent what it sends radosfs)."""
from __future__ import annotations

import collections
import errno
import json
import stat
import sys
import time

import pyfuse3
import trio


class NullFS(pyfuse3.Operations):
    """One directory (the root) of regular files held in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[bytes, int] = {}
        self.data: dict[int, bytearray] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.counts: collections.Counter[str] = collections.Counter()

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        if ino == pyfuse3.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o644, 1, len(self.data[ino])
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = time.time_ns()
        a.st_blksize = 4096
        a.attr_timeout = a.entry_timeout = 1
        return a

    async def getattr(self, inode, ctx=None):
        self.counts["getattr"] += 1
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        self.counts["lookup"] += 1
        ino = self.names.get(name)
        if ino is None or parent_inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def create(self, parent_inode, name, mode, flags, ctx):
        self.counts["create"] += 1
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.names[name] = ino
        self.data[ino] = bytearray()
        return pyfuse3.FileInfo(fh=ino), self._attr(ino)

    async def open(self, inode, flags, ctx):
        self.counts["open"] += 1
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        self.counts["read"] += 1
        return bytes(self.data[fh][off:off + size])

    async def write(self, fh, off, buf):
        self.counts["write"] += 1
        self.data[fh][off:off + len(buf)] = buf
        return len(buf)

    async def flush(self, fh):
        self.counts["flush"] += 1

    async def release(self, fh):
        self.counts["release"] += 1

    async def getxattr(self, inode, name, ctx):
        self.counts["getxattr"] += 1
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        for i, (name, ino) in enumerate(sorted(self.names.items())[start_id:], start_id):
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                break

    async def releasedir(self, fh):
        pass


def main(mountpoint: str, counts_path: str) -> None:
    fs = NullFS()
    options = set(pyfuse3.default_options) - {"default_permissions"} | {
        "fsname=nullfs", "subtype=nullfs"}
    pyfuse3.init(fs, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
        with open(counts_path, "w") as f:
            json.dump(dict(fs.counts), f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
