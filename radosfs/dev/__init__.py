"""Tooling apart from the filesystem: a throwaway local Ceph cluster (tests, demo,
benchmarks), the demo command, and running the mount command as a process."""
