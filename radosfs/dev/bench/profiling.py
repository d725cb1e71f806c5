"""--profile: an extra, untimed run of an operation with py-spy recording the radosfs
daemon, summarised as the top functions by self time and by total time."""
from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from .constants import PY_SPY_CANDIDATES
from .harness import Bench, BenchMount, say
from .meters import timed


def profiled(b: Bench, m: BenchMount, label: str, cmd: list[str] | str,
             before: Callable[[], None] | None = None) -> None:
    """With --profile: run `cmd` again, untimed, with py-spy recording the radosfs daemon;
    the top frames by self and total time go into the report and the JSON."""
    if not b.args.profile:
        return
    spy = next((shutil.which(p) for p in PY_SPY_CANDIDATES if shutil.which(p)), None)
    if spy is None or m.pid is None:
        b.issue(f"--profile {label}: py-spy not found (or no daemon pid); no profile taken")
        return
    if before is not None:
        before()
    out = b.args.profile_dir / f"pyspy-{label}.txt"
    say(f"profiling {label} with py-spy -> {out}")
    spy_proc = subprocess.Popen([spy, "record", "-p", str(m.pid), "-f", "raw", "-o", str(out),
                                 "-r", "200", "-d", "900", "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)          # py-spy attaches
    try:
        dt, _ = timed(cmd, 900)
    finally:
        spy_proc.send_signal(signal.SIGINT)
        try:
            spy_proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy_proc.kill()
            spy_proc.wait()
    summary = summarise_pyspy(out)
    summary["seconds_while_profiled"] = dt
    b.results.setdefault("profiles", {})[label] = summary


def _func(frame: str) -> str:
    """'fn (path/file.py:123)' -> 'fn (file.py)': self time summed over a function's lines."""
    m = re.match(r"^(.*) \((?:.*/)?([^/]+?\.py|[^()]+?):\d+\)$", frame)
    if not m:
        return frame
    name, file = m.groups()
    parent = re.search(r"(radosfs|trio|pyfuse3)/(?:[^/]+/)*[^/]+$", frame.rsplit("(", 1)[-1].split(":")[0])
    return f"{name} ({parent.group(0) if parent else file})"


def summarise_pyspy(path: Path, top: int = 15) -> dict:
    """py-spy raw (collapsed stacks "f1;f2;...;fN count"): functions by self time (all
    code) and by total time (radosfs code only, the mount.py entry frames left out)."""
    self_t: collections.Counter = collections.Counter()
    total_t: collections.Counter = collections.Counter()
    n = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return {"error": repr(exc)}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [_func(f) for f in stack.split(";")]
        n += c
        self_t[frames[-1]] += c
        for f in set(frames):
            if "radosfs/" in f and "radosfs/mount.py" not in f:
                total_t[f] += c
    return {"samples": n, "file": str(path),
            "self": [(f, c, round(100 * c / n, 1)) for f, c in self_t.most_common(top)] if n else [],
            "total": [(f, c, round(100 * c / n, 1)) for f, c in total_t.most_common(top)] if n else []}
