"""The mount's metrics for Prometheus (radosfs/metrics.py renders them): served over HTTP
on 127.0.0.1 (`metrics_port=`) and/or written to a textfile for node_exporter's textfile
collector (`metrics_file=`), and the per-mount librados admin socket's directory.

Both run on the mount's trio loop: a scrape reads the counters between two requests,
never while one changes them. The HTTP side answers one GET per connection (what
Prometheus sends), with a bounded wait for the request, so a client that connects and
says nothing ties up nothing but its own task.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import trio

from ..options import ADMIN_SOCKET, ADMIN_SOCKET_DIR, MountOptions

log = logging.getLogger("radosfs")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_WAIT = 5.0       # seconds a connection may take to send its request
MAX_REQUEST = 8192       # bytes of request head read at most
TEXTFILE_INTERVAL = 10.0  # seconds between two writes of metrics_file


async def open_metrics_listener(port: int) -> trio.SocketListener:
    """Bound before the mount is made, so a port in use fails the mount (one line)."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    return listeners[0]


def listener_port(listener: trio.SocketListener) -> int:
    return listener.socket.getsockname()[1]


async def serve_metrics(listener: trio.SocketListener, render: Callable[[], str]) -> None:
    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(REQUEST_WAIT):
                while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                    try:
                        chunk = await stream.receive_some(4096)
                    except trio.BrokenResourceError:
                        return
                    if not chunk:
                        break
                    head += chunk
            line = head.split(b"\r\n", 1)[0].split()
            if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
                await _reply(stream, 400, b"send GET /metrics\n")
            elif line[1].split(b"?")[0] not in (b"/metrics", b"/"):
                await _reply(stream, 404, b"the metrics are at /metrics\n")
            else:
                await _reply(stream, 200, render().encode(), body=line[0] == b"GET")

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await one(stream)
        except Exception as exc:  # noqa: BLE001 -- a scrape must never end the mount
            log.error("metrics_port: a scrape failed: %r", exc)

    await trio.serve_listeners(guarded, [listener])


async def _reply(stream: trio.SocketStream, status: int, data: bytes,
                 body: bool = True) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    try:
        await stream.send_all(head + (data if body else b""))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _write_atomically(path: str, text: str) -> None:
    """node_exporter must never read half a file: write beside it, then rename."""
    tmp = f"{path}.{os.getpid()}.tmp"   # not *.prom: the collector skips it
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def write_metrics_file(path: str, render: Callable[[], str]) -> None:
    """Every TEXTFILE_INTERVAL seconds until cancelled; a failed write is logged once
    (until one succeeds again), never fatal; the file is removed when the mount ends
    (a gone mount must not keep being exported)."""
    failing = False
    try:
        while True:
            try:
                await trio.to_thread.run_sync(_write_atomically, path, render())
                failing = False
            except Exception as exc:  # noqa: BLE001 -- never fatal to the mount
                if not failing:
                    log.warning("metrics_file %s: cannot write it (%s); retrying every "
                                "%.0f s", path, getattr(exc, "strerror", None) or repr(exc),
                                TEXTFILE_INTERVAL)
                failing = True
            await trio.sleep(TEXTFILE_INTERVAL)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def admin_socket_path(mo: MountOptions) -> str | None:
    """What librados is told for `admin_socket` (None: none). The default's directory
    is made 0700 here: the socket can change the client's configuration, so only the
    mount's own user may reach it. Where it cannot be made (not root), no socket, one
    log line."""
    if mo.admin_socket == "" or (mo.admin_socket is None and "admin_socket" in mo.ceph):
        return None   # none, or ceph.admin_socket= given (set as any ceph.OPTION is)
    path = mo.admin_socket or ADMIN_SOCKET
    if mo.admin_socket is None:
        try:
            os.makedirs(ADMIN_SOCKET_DIR, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.info("no admin socket: cannot make %s (%s); set admin_socket=PATH",
                     ADMIN_SOCKET_DIR, exc.strerror)
            return None
    return path
