"""Listeners: a Unix socket always, TCP when asked. The first byte of each connection picks the protocol.

`{` starts the line protocol; anything else is HTTP and is handed, with the bytes already read, to a
fresh aiohttp request handler, the way uvicorn hands a connection over on a protocol upgrade.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Callable

from rk.daemon.deadlines import peer_name
from rk.daemon.families.line.connection import LineConnection
from rk.daemon.service import Service

log = logging.getLogger("rk.daemon.listener")
# Connections the kernel holds for us before we accept them. asyncio's default of 100 makes a burst
# of clients on the Unix socket fail (EINVAL after a "successful" connect); Linux caps this at somaxconn.
BACKLOG = 4096


class Sniffer(asyncio.Protocol):
    """Reads the first chunk of a connection, then gives the transport to the protocol it belongs to."""

    def __init__(self, service: Service, http_factory: Callable[[], asyncio.Protocol], tcp: bool,
                 track: set[asyncio.Task[None]]) -> None:
        self.service = service
        self.http_factory = http_factory
        self.tcp = tcp
        self.track = track
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.service.settings.header_timeout_s, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
        transport = self.transport
        if data.lstrip()[:1] == b"{":
            self._line(transport, data)
        else:
            self.service.head_deadlines.arm(transport)
            proto = self.http_factory()
            transport.set_protocol(proto)
            proto.connection_made(transport)
            proto.data_received(data)

    def _line(self, transport: asyncio.Transport, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.service.settings.max_body_bytes, loop=loop)
        proto = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(proto)
        proto.connection_made(transport)
        writer = asyncio.StreamWriter(transport, proto, reader, loop)
        proto.data_received(data)
        peer = peer_name(transport)
        conn = LineConnection(self.service, reader, writer, peer, needs_key=self.tcp and bool(self.service.settings.api_key))
        task = loop.create_task(conn.serve())
        self.track.add(task)
        task.add_done_callback(self.track.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class SocketInUse(RuntimeError):
    """The socket path is taken: by a live daemon, or by something that is not a socket at all."""


def prepare_socket_path(path: Path) -> None:
    """Create the private directory; replace a stale socket, refuse a live one and anything that is not a socket.

    `--socket ~/notes.txt` must fail, not delete the file: only a socket is ever unlinked.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it (pick another --socket)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)  # lstat said socket; a symlink is never followed here
            return
        raise
    else:
        raise SocketInUse(f"another rk daemon is already serving {path} (stop it, or pick another --socket)")
    finally:
        probe.close()


async def open_unix(path: Path, factory: Callable[[], asyncio.Protocol], group: str | None) -> asyncio.AbstractServer:
    prepare_socket_path(path)
    old = os.umask(0o177)  # the socket is born 0600: no window in which others could connect
    try:
        server = await asyncio.get_running_loop().create_unix_server(factory, str(path), backlog=BACKLOG)
    finally:
        os.umask(old)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
        os.chmod(path, 0o660)
        with contextlib.suppress(OSError):
            os.chmod(path.parent, 0o750)
            os.chown(path.parent, -1, grp.getgrnam(group).gr_gid)
    return server


async def open_tcp(host: str, port: int, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
    return await asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True, backlog=BACKLOG)
