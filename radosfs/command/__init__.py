"""The mount command's parts below `radosfs.mount`: `setup` (options, mountpoint, what
libfuse gets), `logs` (where and how the daemon logs), `process` (the daemon as a
system process)."""
