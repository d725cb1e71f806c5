"""Storage: one stored file through librados/librbd, knowing nothing of nodes or FUSE.

`rados_ops` (single-object primitives) and `striper` (the libradosstriper layout) under
`object_backend` (a file of an object pool, plain or striped); `rbd_cls` (object-class calls
on image headers), `image_backend` (one image), `image_pools` (a mount's images) and
`image_snaps`; `ownership` (mode/owner overrides); `keys` (what identifies a stored file).
"""
