"""radosfs mounted by the real mount command, as a process: for the tests, the benchmark and
the demo. Mounts it, finds the daemon's pid, and unmounts it, waiting for the daemon to
write back and exit (by pid, never by name)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]


def env_with_repo() -> dict[str, str]:
    """The environment for a mount command that runs this checkout's radosfs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def daemon_pids(path: Path) -> list[int]:
    """The radosfs daemons serving `path`: `pgrep -f` on the mount command's arguments."""
    res = subprocess.run(["pgrep", "-f", f"radosfs\\.mount none {re.escape(str(path))}( |$)"],
                         capture_output=True, text=True, check=False)
    return [int(p) for p in res.stdout.split() if int(p) != os.getpid()]


def fusermount(path: Path, grace: float, complain: Callable[[str], None], what: str = "",
               lazy: bool = False) -> None:
    """Unmount a FUSE mount: `fusermount3 -u` (-uz if `lazy`), retried while busy for
    `grace` seconds, then lazily, telling `complain` (about "{what}{path}")."""
    deadline = time.monotonic() + grace
    error = ""
    while os.path.ismount(path) and time.monotonic() < deadline:
        res = subprocess.run(["fusermount3", "-uz" if lazy else "-u", str(path)], timeout=120,
                             check=False, capture_output=True, text=True)
        if res.returncode == 0:
            break
        error = res.stderr.strip()  # busy right after a killed writer: retry
        time.sleep(1)
    while os.path.ismount(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.path.ismount(path):
        complain(f"{what}{path} still mounted after {grace:g} s ({error}): lazy unmount")
        subprocess.run(["fusermount3", "-uz", str(path)], check=False, capture_output=True)


class MountProcess:
    """One mount. `options` are -o options beyond conf=; `complain(msg)` hears about
    anything unusual at unmount (a busy mount, a daemon that had to be killed)."""

    def __init__(self, path: Path, conf: str | os.PathLike, options: str = "",
                 log: Path | None = None, timeout: float = 90,
                 complain: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.log = Path(log) if log is not None else self.path.with_suffix(".log")
        self.complain = complain or (lambda msg: None)
        self.path.mkdir(parents=True, exist_ok=True)
        opts = f"conf={conf}" + (f",{options}" if options else "")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "radosfs.mount", "none", str(self.path),
                              "-o", opts, "--log", str(self.log)], capture_output=True,
                             text=True, timeout=timeout, cwd=REPO, env=env_with_repo(),
                             check=False)
        self.mount_seconds = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"mount failed: {res.stderr.strip()}\n{self.read_log()}")
        self.pid = self._find_pid()

    def _find_pid(self) -> int | None:
        pids = daemon_pids(self.path)
        if len(pids) != 1:
            self.complain(f"pgrep found {len(pids)} radosfs daemons for {self.path}: {pids}")
        return pids[0] if pids else None

    def stats(self) -> dict:
        """The mount's counters: its `.radosfs-stats` file."""
        return json.loads((self.path / ".radosfs-stats").read_text())

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """Whether the daemon still answers (a dead one gives ENOTCONN to everything)."""
        try:
            os.stat(self.path)
            os.statvfs(self.path)
            return True
        except OSError:
            return False

    def close(self, grace: float = 30) -> None:
        """fusermount3 -u (retried while busy, lazily at last), then wait for the daemon
        to write back and exit; one that does not is sent SIGTERM, then SIGKILL."""
        if os.path.ismount(self.path) and not self.alive():
            # A daemon that died leaves a dead FUSE mount: detach it without waiting.
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False,
                           capture_output=True)
        fusermount(self.path, grace, self.complain)
        deadline = time.monotonic() + 2 * grace
        while "unmounted" not in self.read_log() and time.monotonic() < deadline:
            if self.pid is not None and not pid_alive(self.pid):
                break
            time.sleep(0.1)
        if self.pid is None:
            return
        deadline = time.monotonic() + 15
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_alive(self.pid):
                break
            self.complain(f"radosfs daemon {self.pid} still running after unmount: "
                          f"sending {sig.name}")
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(3)
