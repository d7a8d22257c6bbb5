"""Who a job belongs to, for the per-client cap (RK_CLIENT_MAX_JOBS) and `rk ps`: the API key it
presented (hashed: the key itself is never shown), else its peer address, else the Unix socket
peer's user (SO_PEERCRED)."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import struct


def client_id(transport: asyncio.BaseTransport | None, key: str | None) -> str:
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10]
    if transport is None:
        return ""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    sock = transport.get_extra_info("socket")
    if sock is not None and hasattr(socket, "SO_PEERCRED"):
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return "unix"
        return f"uid:{struct.unpack('3i', creds)[2]}"
    return "unix"

