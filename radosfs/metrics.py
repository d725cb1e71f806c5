"""What the mount measures of its FUSE requests, and every counter in the Prometheus text
exposition format (version 0.0.4), for `metrics_port=` and `metrics_file=`.

`RequestMetrics` is fed by `operations.fuse_errors` (every handler, once per request):
latency per FUSE op (a histogram: `histogram_quantile()` gives percentiles), errors by op
and errno, and per pool the requests, bytes read and bytes written through the mount.
`render` turns those and the stats file's counters (`MountContext.counters`) into the
text format. Pure bookkeeping: it imports nothing of the package, does no I/O.
"""
from __future__ import annotations

import bisect
import errno
import math
from typing import Iterable

# Upper bounds in seconds (the +Inf bucket is implied): from a cached getattr (tens of
# microseconds) to a write-back that waits for the cluster (op_timeout is 30 s).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NO_POOL = ""    # requests about the root, the stats file, ... (no pool label)

# The stats file's fields that only grow (counters); every other number is a gauge.
COUNTER_FIELDS = {
    "cache": {"hits", "misses", "reads", "writes", "bytes_read", "bytes_written",
              "prefetched_pages", "evicted_pages", "writeback_errors"},
    "rados": {"aio_ops", "thread_calls", "errors", "timeouts", "abandoned_threads",
              "late_completions"},
}
HELP = {
    "cache_hits": "page lookups answered from the cache",
    "cache_misses": "page lookups that had to read the cluster",
    "cache_reads": "read requests served by the page cache",
    "cache_writes": "write requests taken by the page cache",
    "cache_bytes_read": "bytes read through the mount",
    "cache_bytes_written": "bytes written through the mount",
    "cache_prefetched_pages": "pages read ahead",
    "cache_evicted_pages": "pages dropped to stay within cache_size",
    "cache_writeback_errors": "write-backs the cluster refused or did not answer",
    "cache_cached_bytes": "bytes held in the page cache now",
    "cache_dirty_bytes": "bytes written but not yet acknowledged by the cluster",
    "cache_budget": "the page cache budget (cache_size)",
    "cache_dirty_limit": "dirty bytes before writers wait",
    "cache_files": "stored files in the cache",
    "rados_aio_ops": "asynchronous librados/librbd calls",
    "rados_thread_calls": "blocking librados/librbd calls run in worker threads",
    "rados_errors": "librados/librbd calls that failed",
    "rados_timeouts": "librados/librbd calls failed at op_timeout",
    "rados_abandoned_threads": "worker threads given up on at their deadline",
    "rados_late_completions": "abandoned calls that returned after all",
    "rados_ops_in_flight": "librados/librbd calls in flight now",
    "rados_bytes_in_flight": "bytes of librados/librbd calls in flight now",
}


class Histogram:
    """Counts per bucket (not cumulative: `render` sums them), the sum and the count."""
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


class PoolCounts:
    __slots__ = ("ops", "bytes_read", "bytes_written")

    def __init__(self) -> None:
        self.ops = self.bytes_read = self.bytes_written = 0


class RequestMetrics:
    """Every FUSE request the mount answered, as `record` was told of it."""

    def __init__(self) -> None:
        self.latency: dict[str, Histogram] = {}
        self.errors: dict[tuple[str, int], int] = {}
        self.pools: dict[str, PoolCounts] = {}

    def record(self, op: str, seconds: float, err: int = 0, pool: str | None = None,
               nbytes: int = 0) -> None:
        """One request of FUSE op `op` took `seconds`; `err` the errno it answered (0:
        success); `pool` the pool it was about; `nbytes` what a read/write moved."""
        h = self.latency.get(op)
        if h is None:
            h = self.latency[op] = Histogram()
        h.observe(max(seconds, 0.0))
        if err:
            self.errors[(op, err)] = self.errors.get((op, err), 0) + 1
        if pool:
            p = self.pools.get(pool)
            if p is None:
                p = self.pools[pool] = PoolCounts()
            p.ops += 1
            if op == "read":
                p.bytes_read += nbytes
            elif op == "write":
                p.bytes_written += nbytes

    def counters(self) -> dict:
        """The stats file's `requests` section (JSON)."""
        errors: dict[str, int] = {}
        for (_, err), n in self.errors.items():
            name = errno_name(err)
            errors[name] = errors.get(name, 0) + n
        return {"ops": {op: h.count for op, h in sorted(self.latency.items())},
                "errors": dict(sorted(errors.items())),
                "pools": {name: {"ops": p.ops, "bytes_read": p.bytes_read,
                                 "bytes_written": p.bytes_written}
                          for name, p in sorted(self.pools.items())}}


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


# ---- the text format --------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _number(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, Iterable[tuple[str, str]], float]]) -> None:
        """One metric family: HELP, TYPE, then its samples (suffix, labels, value)."""
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")


def render(counters: dict, requests: RequestMetrics, prefix: str = "radosfs") -> str:
    """The Prometheus text exposition (0.0.4) of `counters` (the stats file's sections
    cache and rados; mount gives the info labels) and of `requests`."""
    w = _Writer()
    mount = counters.get("mount", {})
    w.family(f"{prefix}_mount_info", "gauge", "the mount (value 1): its mountpoint, cephx "
             "user, cluster and whether it is read-only",
             [("", [("mountpoint", mount.get("mountpoint") or ""),
                    ("name", mount.get("name") or ""), ("cluster", mount.get("cluster") or ""),
                    ("ro", "1" if mount.get("ro") else "0")], 1)])
    if "since" in mount:
        w.family(f"{prefix}_mount_start_time_seconds", "gauge",
                 "when the mount was made (Unix time)", [("", [], mount["since"])])
    for section in ("cache", "rados"):
        for field, value in sorted(counters.get(section, {}).items()):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            key = f"{section}_{field}"
            if field in COUNTER_FIELDS.get(section, ()):
                w.family(f"{prefix}_{key}_total", "counter", HELP.get(key, key),
                         [("", [], value)])
            else:
                w.family(f"{prefix}_{key}", "gauge", HELP.get(key, key), [("", [], value)])
    # requests
    lat = sorted(requests.latency.items())
    samples: list[tuple[str, list[tuple[str, str]], float]] = []
    for op, h in lat:
        running = 0
        for bound, n in zip(BUCKETS + (math.inf,), h.counts):
            running += n
            samples.append(("_bucket", [("op", op), ("le", _number(float(bound)))], running))
        samples.append(("_sum", [("op", op)], h.total))
        samples.append(("_count", [("op", op)], h.count))
    w.family(f"{prefix}_request_duration_seconds", "histogram",
             "time to answer a FUSE request, by FUSE op", samples)
    w.family(f"{prefix}_request_errors_total", "counter",
             "FUSE requests answered with an error, by op and errno",
             [("", [("op", op), ("errno", errno_name(err))], n)
              for (op, err), n in sorted(requests.errors.items())])
    pools = sorted(requests.pools.items())
    w.family(f"{prefix}_pool_requests_total", "counter",
             "FUSE requests about files and directories of a pool",
             [("", [("pool", name)], p.ops) for name, p in pools])
    w.family(f"{prefix}_pool_read_bytes_total", "counter", "bytes read through the mount "
             "from a pool's files", [("", [("pool", name)], p.bytes_read) for name, p in pools])
    w.family(f"{prefix}_pool_written_bytes_total", "counter", "bytes written through the "
             "mount to a pool's files",
             [("", [("pool", name)], p.bytes_written) for name, p in pools])
    return "\n".join(w.lines) + "\n"
