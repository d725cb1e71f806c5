"""A throwaway single-node Ceph cluster (one mon, one mgr, one OSD or more) for tests and demos.

radosfs needs a real cluster to be tested against, and tests must not touch a shared one: this
module builds a private cluster in a directory of its own -- cephx on, 127.0.0.1 only, ports
picked per cluster so that several can run side by side -- and starts, checks and stops its
daemons by pid.

Layout of the directory::

    ceph.conf                   everything a daemon or client needs (CEPH_CONF points here)
    ceph.client.admin.keyring   client.admin's key, found by clients through [client] keyring
    cluster.json                written once the build is complete: store type, fsid, OSD uuid
    mon/ mgr/ osd/              daemon data ($cluster-$id)
    run/                        pid files and admin sockets
    log/                        daemon logs, plus each daemon's stdout/stderr (*.out)

Stores: ``memstore`` keeps the OSD's data in RAM (fast; what tests use); it does not survive a
stop, so ``start()`` on a stopped memstore cluster rebuilds it from scratch (new fsid, new ports).
``bluestore`` uses a sparse file in the OSD directory and survives restarts: ``start()`` on a built
bluestore directory only starts the daemons again.

Shapes: one OSD by default (pools of size 1). ``osds=3`` is shaped like production: three
OSDs, pools replicated 3 times with min_size 2, CRUSH failure domain osd, and the
erasure-code profile ``radosfs-k2m1`` (k=2, m=1, failure domain osd) for EC pools; any one
OSD can be killed (``stop_daemon("osd.1", kill=True)``) and the cluster keeps serving.

Command line: ``python -m radosfs.dev.cluster start|stop|status DIR``.

Modules: ``common`` (names, errors, helpers), ``conf`` (ceph.conf and the marker),
``daemons`` (processes and commands), ``local`` (the LocalCluster API), ``cli``.
"""
from .cli import main
from .common import ClusterError
from .local import EC_PROFILE, LocalCluster

__all__ = ["ClusterError", "EC_PROFILE", "LocalCluster", "main"]
