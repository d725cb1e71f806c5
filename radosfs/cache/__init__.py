"""The page cache: one budget for the mount, over the small `Backend` protocol.

Knows nothing of RADOS: plain objects, striped sets, RBD images and snapshot views are all
backends (radosfs.store), and the cache only ever talks to `Backend`.
"""
from .backend import Backend
from .pagecache import PageCache
from .writeback import DIRTY_EXPIRE
from .pages import PAGE_SIZE, CachedFile, ReadState

__all__ = ["Backend", "CachedFile", "DIRTY_EXPIRE", "PAGE_SIZE", "PageCache", "ReadState"]
