"""Where a mount logs, and how: one line per event (names escaped, never raw bytes),
a file that follows logrotate (reopened when moved away, and on SIGHUP)."""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys

log = logging.getLogger("radosfs")


from ..options import MountOptions


# Where a background daemon logs when neither -o log= nor syslog nor the journal is there.
FALLBACK_LOG = "/var/log/radosfs.log"


class OneLineFormatter(logging.Formatter):
    """One line per event: newlines (tracebacks too) and other control characters are
    escaped, so a name with a newline or raw bytes cannot forge or break log lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.translate(_ESCAPES)


_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 9: "\\t", 127: "\\x7f"}


def _journal_stderr() -> bool:
    """Whether stderr is the systemd journal (JOURNAL_STREAM names its device:inode)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
        dev, ino = (int(x) for x in js.split(":"))
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def log_target(mo: MountOptions, foreground: bool) -> str:
    """Where the daemon logs: `stderr`, `syslog` or a path (see mount.radosfs(8))."""
    if mo.log:
        return mo.log
    if foreground or _journal_stderr():
        return "stderr"
    if os.path.exists("/dev/log"):
        return "syslog"
    return FALLBACK_LOG   # a background daemon's stderr is /dev/null: never log nowhere


def setup_logging(target: str, level: str | None, debug: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    fmt = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    if target == "stderr":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif target == "syslog":
        handler = logging.handlers.SysLogHandler("/dev/log")
        fmt = "radosfs[%(process)d]: %(levelname)s %(name)s: %(message)s"
    else:
        # Reopens the file when logrotate has moved it away; SIGHUP reopens it too.
        handler = logging.handlers.WatchedFileHandler(target)
    handler.setFormatter(OneLineFormatter(fmt))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, (level or "info").upper()))


def reopen_logs() -> None:
    """SIGHUP: reopen log files (logrotate's `postrotate kill -HUP`)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.acquire()
            try:
                if h.stream:
                    h.stream.close()
                h.stream = h._open()
                if isinstance(h, logging.handlers.WatchedFileHandler):
                    h._statstream()
            finally:
                h.release()
    log.info("SIGHUP: log reopened")
