"""What radosfs is measured against: librados and librbd aio loops in Python (a condition
variable and completion callbacks, no thread per request), and rbd-fuse. (The rados CLI
runs in the bigfile step, the rbd/ceph CLI in the rbd step.)"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import rados
import rbd as rbd_mod

from radosfs.dev.mount_process import fusermount

from .constants import BIG_DEPTH, OBJ, SMALL_SIZE
from .meters import CpuMeter, drop_caches


class AioLoop:
    """Keeps up to `depth` librados aio requests in flight: a condition variable counts them
    and the completion callbacks (on librados' finisher thread) decrement and notify. No
    thread per request."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.cond = threading.Condition()
        self.inflight = 0
        self.errors: list[str] = []
        self.done_bytes = 0

    def _done(self, what: str, comp, result=None) -> None:
        # On librados' finisher thread; must never raise (the count would be lost).
        with self.cond:
            self.inflight -= 1
            try:
                rv = comp.get_return_value()
                if rv < 0:
                    self.errors.append(f"{what}: errno {-rv}")
                if isinstance(result, bytes):          # aio_read's data
                    self.done_bytes += len(result)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"{what}: {exc!r}")
            self.cond.notify()

    def submit(self, start: Callable[[Callable], object], what: str) -> None:
        with self.cond:
            while self.inflight >= self.depth:
                self.cond.wait()
            self.inflight += 1
        try:
            start(lambda comp, *rest: self._done(what, comp, rest[0] if rest else None))
        except BaseException:
            with self.cond:
                self.inflight -= 1
            raise

    def drain(self) -> None:
        with self.cond:
            while self.inflight:
                self.cond.wait()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} aio requests failed, first: "
                               f"{self.errors[0]}")


# ---------------------------------------------------------------------------- librados

def aio_write_file(io: rados.Ioctx, src: Path, prefix: str, depth: int) -> tuple[float, int]:
    """Write a local file as 4 MiB objects prefix.%06d; returns (seconds, object count)."""
    loop = AioLoop(depth)
    n = 0
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as f:
        while True:
            chunk = f.read(OBJ)
            if not chunk:
                break
            name = f"{prefix}.{n:06d}"
            loop.submit(lambda cb, name=name, chunk=chunk: io.aio_write_full(name, chunk, cb),
                        name)
            n += 1
    loop.drain()
    return time.perf_counter() - t0, n


def aio_read_objects(io: rados.Ioctx, prefix: str, count: int, depth: int) -> tuple[float, int]:
    loop = AioLoop(depth)
    t0 = time.perf_counter()
    for i in range(count):
        name = f"{prefix}.{i:06d}"
        loop.submit(lambda cb, name=name: io.aio_read(name, OBJ, 0, cb), name)
    loop.drain()
    return time.perf_counter() - t0, loop.done_bytes


def aio_many(io: rados.Ioctx, names: list[str], op: str, depth: int,
             data: bytes = b"") -> float:
    """write_full / stat / read / remove of many objects, `depth` in flight."""
    loop = AioLoop(depth)
    starts = {
        "write": lambda name: (lambda cb: io.aio_write_full(name, data, cb)),
        "stat": lambda name: (lambda cb: io.aio_stat(name, cb)),
        "read": lambda name: (lambda cb: io.aio_read(name, max(len(data), SMALL_SIZE), 0, cb)),
        "remove": lambda name: (lambda cb: io.aio_remove(name, cb)),
    }[op]
    t0 = time.perf_counter()
    for name in names:
        loop.submit(starts(name), name)
    loop.drain()
    return time.perf_counter() - t0


def clear_pool(io: rados.Ioctx) -> int:
    """Remove every object of the pool (aio x64); returns how many were removed."""
    total = 0
    for _ in range(5):
        names = [o.key for o in io.list_objects()]
        if not names:
            break
        try:
            aio_many(io, names, "remove", 64)
        except RuntimeError:
            pass  # ENOENT races; the next round lists again
        total += len(names)
    return total


# ---------------------------------------------------------------------------- librbd

def librbd_loop(io: rados.Ioctx, name: str, src: Path, size: int,
                cpu: Callable[[], CpuMeter]) -> tuple[float, dict, float, dict, int]:
    """Python librbd: a pre-created `size` image written from `src` with aio_write, 16 x 4 MiB
    in flight (AioLoop: completion callbacks, no thread per request), aio_flush, closed;
    drop_caches; opened again and read back with aio_read, 16 x 4 MiB in flight. `cpu()`
    gives the meter each of the two is measured with.
    Returns (write s, write CPU, read s, read CPU, bytes read)."""
    rbd_mod.RBD().create(io, name, size)
    img = rbd_mod.Image(io, name)
    try:
        loop = AioLoop(BIG_DEPTH)
        with cpu() as wcpu:
            t0 = time.perf_counter()
            with open(src, "rb", buffering=0) as f:
                off = 0
                while off < size:
                    chunk = f.read(min(OBJ, size - off))
                    if not chunk:
                        break
                    # The completion callback holds `chunk` until librbd is done with it
                    # (librbd may not copy the buffer).
                    loop.submit(lambda cb, c=chunk, o=off: img.aio_write(
                        c, o, lambda comp, *rest, c=c: cb(comp, *rest)), f"write@{off}")
                    off += len(chunk)
            loop.drain()
            loop.submit(lambda cb: img.aio_flush(cb), "flush")
            loop.drain()
            wt = time.perf_counter() - t0
    finally:
        img.close()
    drop_caches()
    img = rbd_mod.Image(io, name)
    try:
        loop = AioLoop(BIG_DEPTH)
        with cpu() as rcpu:
            t0 = time.perf_counter()
            for off in range(0, size, OBJ):
                loop.submit(lambda cb, o=off: img.aio_read(o, min(OBJ, size - o), cb),
                            f"read@{off}")
            loop.drain()
            rt = time.perf_counter() - t0
    finally:
        img.close()
    return wt, wcpu.share, rt, rcpu.share, loop.done_bytes


def remove_images(io: rados.Ioctx) -> int:
    """Remove every image of an image pool (memstore keeps their bytes in RAM)."""
    r = rbd_mod.RBD()
    names = r.list(io)
    for n in names:
        r.remove(io, n)
    return len(names)


# ---------------------------------------------------------------------------- rbd-fuse

class RbdFuse:
    """rbd-fuse on a pool, in the foreground (`-f`) so that its pid is ours; unmounted with
    `fusermount3 -u`. `complain(msg)` hears about anything unusual, `note(msg)` about what
    rbd-fuse printed."""

    cpu_label = "rbd-fuse"      # its name among the CPU shares (Bench.cpu)

    def __init__(self, conf: Path, pool: str, path: Path, log: Path, env: dict,
                 complain: Callable[[str], None], note: Callable[[str], None]) -> None:
        self.path, self.log, self.complain, self.note = path, log, complain, note
        path.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")
        self.proc = subprocess.Popen(["rbd-fuse", "-c", str(conf), "-p", pool, str(path),
                                      "-f"], stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        try:
            while (not os.path.ismount(path) and self.proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        except BaseException:  # interrupted: leave no rbd-fuse behind
            self.close()
            raise
        if not os.path.ismount(path):
            self.close()
            raise RuntimeError(f"rbd-fuse did not mount {path} (exit "
                               f"{self.proc.returncode}): {self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " || ".join(ln[:200] for ln in lines[-3:])

    def close(self, lazy: bool = False) -> None:
        fusermount(self.path, 30, self.complain, what="rbd-fuse ", lazy=lazy)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self.complain(f"rbd-fuse {self.pid} still running after unmount: "
                              f"sending {sig.name}")
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        self._logf.close()
        out = self.log_tail()
        if out:
            self.note(f"{self.log.name}: rbd-fuse printed: {out}")
        if self.proc.returncode not in (0, None):
            self.complain(f"rbd-fuse exited with {self.proc.returncode}: {self.log_tail()}")
