"""Errno mapping in one place.

Every failure that reaches FUSE goes through `to_errno`, so a caller sees the right errno
and the log gets one line naming the cause. Nothing else in the package decides errnos
for librados/librbd exceptions.
"""
from __future__ import annotations

import errno
import logging

log = logging.getLogger(__name__)

# librados errors that mean something specific to a filesystem user.
_PASS_THROUGH = {
    errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.EROFS,
    errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EINVAL,
    errno.EBUSY, errno.ETIMEDOUT, errno.ENOTDIR, errno.EISDIR, errno.ENODATA,
    errno.E2BIG, errno.ERANGE, errno.EXDEV, errno.ENOTSUP, errno.ENOSYS, errno.EMSGSIZE,
    errno.EIO, errno.ENOTCONN, errno.ESTALE,
}


class RadosFSError(Exception):
    """An error that already knows its errno (raised by our own code)."""

    def __init__(self, err: int, message: str = "", logged: bool = False) -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err
        self.logged = logged  # its cause is in the log already: `to_errno` says no more


def errno_of(exc: BaseException) -> int | None:
    """The errno an exception carries (librados, librbd and OSError all have `.errno`)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    err = getattr(exc, "errno", None)
    if isinstance(err, int) and err:
        return abs(err)
    return None


def refused_in_place(exc: BaseException, what: str) -> BaseException:
    """`exc`, or -- when it is EOPNOTSUPP from a write or truncate -- the same errno with
    the reason in words: an erasure-coded pool without `allow_ec_overwrites` takes only
    whole-object writes and appends at a stripe boundary (the log line must say why a
    plain `dd conv=notrunc` failed). `what` names the object."""
    if errno_of(exc) != errno.EOPNOTSUPP:
        return exc
    return RadosFSError(errno.EOPNOTSUPP,
                        f"{what}: the pool refuses writes in place (an erasure-coded pool "
                        f"without allow_ec_overwrites takes only whole-object writes and "
                        f"appends at a stripe boundary; truncate only to 0)")


def to_errno(exc: BaseException, what: str) -> int:
    """Map any exception to the errno a filesystem caller should see, logging the cause.

    `what` names the operation and path, e.g. "write data/foo".
    """
    err = errno_of(exc)
    if getattr(exc, "logged", False) and err:
        log.debug("%s: %s", what, exc)
        return errno.EIO if err in (errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN) else err
    if err == errno.ETIMEDOUT:
        log.error("%s: cluster did not answer in time (%s)", what, exc)
        return errno.EIO
    if err == errno.EMSGSIZE or err == errno.EFBIG:
        log.warning("%s: object too large for the cluster (%s)", what, exc)
        return errno.EFBIG
    if err in _PASS_THROUGH:
        level = logging.DEBUG if err in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY,
                                         errno.ENODATA, errno.ENAMETOOLONG) else logging.WARNING
        log.log(level, "%s: %s", what, exc)
        return err
    if err == errno.ESHUTDOWN or err == errno.ENOTCONN:
        log.error("%s: not connected to the cluster (%s)", what, exc)
        return errno.EIO
    log.error("%s: unexpected failure: %r", what, exc, exc_info=err is None)
    return errno.EIO


def printable(text: str) -> str:
    """`text` with every character that could start a line or fake one escaped
    (a newline in a file or xattr name must not write a log line of its own)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
