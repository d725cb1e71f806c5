"""The local cluster's processes: launching, watching, stopping daemons; running tools."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time

from .common import (
    ClusterError, _Daemon, _CLUSTER, _MGR_ID, _CHECK_POOL, _one_line, _error_line,
    _is_daemon, _signal)

log = logging.getLogger(__name__)


class Daemons:
    """Mixin of LocalCluster: its daemons and the commands run against it."""

    def _launch(self, d: _Daemon) -> None:
        """Start one daemon in the foreground (-f) in its own session, output to its .out file."""
        binary = shutil.which(d.binary)
        if binary is None:
            raise ClusterError(f"{d.binary} not found on PATH (install the ceph packages)")
        d.log_file.parent.mkdir(parents=True, exist_ok=True)
        d.pid_file.parent.mkdir(parents=True, exist_ok=True)
        d.data.mkdir(parents=True, exist_ok=True)
        d.log_start = d.log_file.stat().st_size if d.log_file.exists() else 0
        with open(d.out_file, "ab") as out:
            d.out_start = out.tell()
            proc = subprocess.Popen(
                [binary, "-f", "--cluster", _CLUSTER, "--conf", str(self.conf_path),
                 "-i", d.ident],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env())
        self._procs[d.name] = proc
        self._watch.append(d)
        # ceph writes the pid file itself a little later; write it now so that a stop() from
        # another process can find the daemon even if it fails early.
        d.pid_file.write_text(f"{proc.pid}\n")
        log.info("started %s (pid %d)", d.name, proc.pid)

    def _check_watched(self) -> None:
        """Raise ClusterError if a daemon launched by the running start() has exited."""
        for d in self._watch:
            proc = self._procs.get(d.name)
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"{d.name} ({d.binary}) exited with status {proc.returncode} "
                                   f"while starting: {self._cause(d)}; see {d.log_file}")

    def _cause(self, d: _Daemon, extra: str = "") -> str:
        """The daemon's most telling error line: from ``extra`` (a tool's stderr), else from
        the end of its stderr file, else from the end of its log."""
        texts = [extra] if extra else []
        for path, start in ((d.out_file, d.out_start), (d.log_file, d.log_start)):
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(start, f.tell() - 256 * 1024))
                    texts.append(f.read().decode(errors="replace"))
            except OSError:
                pass
        for text in texts:
            cause = _error_line(text)
            if cause:
                return cause
        return "no error message"

    def _pid(self, d: _Daemon) -> int | None:
        """The pid of ``d`` if it is alive and really is this cluster's daemon, else None."""
        candidates = []
        proc = self._procs.get(d.name)
        if proc is not None and proc.poll() is None:
            candidates.append(proc.pid)
        try:
            candidates.append(int(d.pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        for pid in candidates:
            if _is_daemon(pid, d.binary, self.conf_path):
                return pid
        return None

    def _alive(self, d: _Daemon) -> bool:
        return self._pid(d) is not None

    def _stop_daemons(self, daemons: list[_Daemon], grace: float = 15) -> None:
        """SIGTERM the daemons, wait up to ``grace`` seconds, then SIGKILL; reap our children."""
        pids = {}
        for d in daemons:
            pid = self._pid(d)
            if pid is not None:
                pids[d.name] = (d, pid)
                log.info("stopping %s (pid %d)", d.name, pid)
                _signal(pid, signal.SIGTERM)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            if sig == signal.SIGKILL:
                for name, (d, pid) in pids.items():
                    log.warning("%s (pid %d) ignored SIGTERM for %ss; killing it",
                                name, pid, grace)
                    _signal(pid, signal.SIGKILL)
            end = time.monotonic() + wait
            while pids and time.monotonic() < end:
                for name, (d, pid) in list(pids.items()):
                    proc = self._procs.get(name)
                    if proc is not None and proc.pid == pid:
                        proc.poll()
                    if not _is_daemon(pid, d.binary, self.conf_path):
                        del pids[name]
                if pids:
                    time.sleep(0.05)
            if not pids:
                break
        if pids:
            raise ClusterError(f"could not stop {', '.join(pids)}; see "
                               f"{next(iter(pids.values()))[0].log_file}")
        for d in daemons:
            proc = self._procs.pop(d.name, None)
            if proc is not None:
                try:
                    proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            d.pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ commands

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the mgr is active and a client can write to and delete from a pool."""
        t0 = time.monotonic()
        self._ceph(["osd", "pool", "create", _CHECK_POOL, "1", "1"], timeout=self._left(deadline))
        # Writing before the OSD is active costs ~5 s: the client only asks again for a newer
        # osdmap on its 5 s objecter tick. The OSD's admin socket says when it is active.
        for osd in self._osd_daemons:
            self._wait_osd_active(deadline, osd)
        probe = self.directory / "run" / "probe"
        probe.write_bytes(b"radosfs.cluster probe\n")
        rados = ["rados", "--conf", str(self.conf_path), "-p", _CHECK_POOL]
        self._tool(rados + ["put", "probe", str(probe)], deadline)
        self._tool(rados + ["rm", "probe"], deadline)
        probe.unlink(missing_ok=True)
        self._ceph(["osd", "pool", "rm", _CHECK_POOL, _CHECK_POOL,
                    "--yes-i-really-really-mean-it"], timeout=self._left(deadline))
        log.info("client write ok after %.1fs", time.monotonic() - t0)
        while True:
            status = json.loads(self._ceph(["mgr", "stat", "--format", "json"],
                                           timeout=self._left(deadline)))
            if status.get("available"):
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"mgr.{_MGR_ID} did not become active in time; "
                                   f"see {self._mgr.log_file}")
            self._check_watched()
            time.sleep(0.25)

    def _wait_osd_active(self, deadline: float, osd: _Daemon) -> None:
        asok = self.directory / "run" / f"{_CLUSTER}-{osd.name}.asok"
        state = "not started"
        while time.monotonic() < deadline:
            self._check_watched()
            try:
                out = self._run(["ceph", "--admin-daemon", str(asok), "status"],
                                min(5.0, self._left(deadline)), daemon=osd, watch=True)
                state = json.loads(out).get("state", "?")
            except ClusterError:
                self._check_watched()      # a dead OSD is the real error; else: not up yet
            except ValueError:
                pass
            if state == "active":
                return
            time.sleep(0.1)
        raise ClusterError(f"{osd.name} did not become active in time (state: {state}); "
                           f"see {osd.log_file}")

    def _ceph(self, args: list[str], *, timeout: float, watch: bool = True) -> str:
        timeout = max(1.0, timeout)
        cmd = ["ceph", "--conf", str(self.conf_path), "--connect-timeout",
               str(int(max(1, timeout))), *args]
        return self._run(cmd, timeout, daemon=self._mon, watch=watch)

    def _tool(self, cmd: list[str], deadline: float, daemon: _Daemon | None = None,
              conf_env: bool = True) -> str:
        return self._run(cmd, self._left(deadline), daemon=daemon or self._mon, watch=True,
                         conf_env=conf_env)

    def _run(self, cmd: list[str], timeout: float, *, daemon: _Daemon, watch: bool,
             conf_env: bool = True) -> str:
        """Run a command; while it runs, notice a launched daemon dying (rather than hang)."""
        shown = _one_line(" ".join(os.path.basename(a) if a.startswith("/") else a
                                   for a in cmd[:9]))
        if shutil.which(cmd[0]) is None:
            raise ClusterError(f"{cmd[0]} not found on PATH (install the ceph packages)")
        end = time.monotonic() + timeout
        env = self.env()
        if not conf_env:       # ceph-authtool -n mon. would read [mon] and log as "mon."
            del env["CEPH_CONF"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if watch:
                        self._check_watched()
                    if time.monotonic() > end:
                        raise ClusterError(f"`{shown}` timed out after {timeout:.0f}s; "
                                           f"see {daemon.log_file}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != 0:
            if watch:
                self._check_watched()
            err_text = err.decode(errors="replace")
            if cmd[0].startswith("ceph-"):          # a daemon's mkfs: find the real error
                msg = self._cause(daemon, err_text)
            else:                                   # CLI tools print the error last
                lines = err_text.strip().splitlines()
                msg = _one_line(lines[-1]) if lines else f"exit status {proc.returncode}"
            raise ClusterError(f"`{shown}` failed: {msg}; see {daemon.log_file}")
        log.debug("`%s` took %.2fs", shown, time.monotonic() - (end - timeout))
        return out.decode(errors="replace")

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.5, deadline - time.monotonic())
