"""The cluster client: one Rados handle, ioctxs and timeouts (`connection`), and the one
concurrency boundary between librados/librbd and the trio loop (`bridge`)."""
