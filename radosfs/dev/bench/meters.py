"""Measuring: timed commands, CPU shares, RSS sampling, the machine's description, and the
kernel's caches (dropped for cold reads, warmed for writers)."""
from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import threading
import time
from pathlib import Path

from radosfs.dev.mount_process import REPO

from .constants import GiB, MiB, RSS_INTERVAL


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    ceph_version = subprocess.run(["ceph", "--version"], capture_output=True, text=True,
                                  check=False).stdout.strip()
    git = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
                         capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "radosfs"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    dirty = [d for d in dirty if d.strip()]
    return {"git": git[:90], "radosfs_uncommitted": len(dirty),
            "nproc": os.cpu_count(), "cpu": cpu, "ram_bytes": mem,
            "kernel": platform.release(), "loadavg_start": loadavg(),
            "python": platform.python_version(), "ceph": ceph_version,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every RSS_INTERVAL seconds; `peak` is the maximum seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()   # not _stop: Thread has a _stop() of its own

    def run(self) -> None:
        while not self._halt.is_set():
            rss = rss_of(self.pid)
            if rss is not None:
                self.peak = max(self.peak, rss)
                self.samples += 1
            self._halt.wait(RSS_INTERVAL)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (steal counts as busy)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    total = sum(f[:8])
    return total - idle, total


class CpuMeter:
    """CPU used by some processes over a `with` block, as a share of one core
    (1.0 = one core busy all along: a Python daemon at ~1.0 is GIL/CPU-bound)."""

    def __init__(self, client: str = "children", **pids: int | None) -> None:
        self.client = client            # the measured client: our children, or this process
        self.pids = {k: v for k, v in pids.items() if v}
        self.share: dict[str, float] = {}
        self.seconds: dict[str, float] = {}   # CPU seconds of each pid over the block

    def _client_cpu(self) -> float:
        who = resource.RUSAGE_CHILDREN if self.client == "children" else resource.RUSAGE_SELF
        ru = resource.getrusage(who)
        return ru.ru_utime + ru.ru_stime

    def __enter__(self) -> "CpuMeter":
        self._t0 = time.perf_counter()
        self._cl0 = self._client_cpu()
        self._c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self._m0 = _machine_cpu()
        return self

    def __exit__(self, *exc) -> None:
        dt = time.perf_counter() - self._t0
        if dt > 0:
            self.share["client"] = round((self._client_cpu() - self._cl0) / dt, 2)
        for k, p in self.pids.items():
            c1, c0 = cpu_seconds(p), self._c0.get(k)
            if c1 is not None and c0 is not None and dt > 0:
                self.share[k] = round((c1 - c0) / dt, 2)
                self.seconds[k] = c1 - c0
        m1, m0 = _machine_cpu(), self._m0
        if m1 and m0 and m1[1] > m0[1]:
            # Busy share of all CPUs, in cores: how much of the machine was in use
            # (ours and the other engineers' processes), e.g. 1.9 of 2.
            ncpu = os.cpu_count() or 1
            self.share["machine"] = round((m1[0] - m0[0]) / (m1[1] - m0[1]) * ncpu, 2)


def per_gib(cpu: CpuMeter, who: str, nbytes: int) -> float | None:
    """CPU seconds `who` spent per GiB moved (the daemon's cost of a byte, from
    /proc/PID/stat: its own threads and librados'/librbd's)."""
    sec = cpu.seconds.get(who)
    return None if sec is None or not nbytes else sec / (nbytes / GiB)


def drop_caches() -> bool:
    """sync + echo 3 > /proc/sys/vm/drop_caches (root only); False if it could not be done."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm(path: Path) -> None:
    """Read a local file so that it is in the page cache (writers then read it from RAM)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 * MiB):
            pass


def timed(cmd: list[str] | str, timeout: float, stdout=subprocess.DEVNULL,
          env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command and time it; raise with its stderr if it fails."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, shell=isinstance(cmd, str), stdout=stdout,
                         stderr=subprocess.PIPE, timeout=timeout, env=env, check=False)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(cmd)} failed "
                           f"({res.returncode}): {err[-1] if err else ''}")
    return dt, res
