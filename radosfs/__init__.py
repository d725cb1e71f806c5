"""radosfs: a FUSE filesystem that shows a Ceph cluster's pools as directories and its
RADOS objects and RBD images as files."""

__version__ = "0.1.0"
