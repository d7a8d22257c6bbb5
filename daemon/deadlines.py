"""Deadlines for slow or half-open HTTP connections, which aiohttp alone does not bound."""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("rk.daemon.deadlines")


def peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unix"


class HeadDeadlines:
    """Closes HTTP connections whose first request head does not arrive in time (slowloris).

    Armed when a connection turns out to be HTTP, met by the HTTP app as soon as aiohttp has parsed
    a request head. aiohttp itself only times out idle keep-alive connections.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def arm(self, transport: asyncio.BaseTransport) -> None:
        key = id(transport)

        def expire() -> None:
            self._timers.pop(key, None)
            log.info("closing %s: no complete request head in %.0f s", peer_name(transport), self.timeout_s)
            transport.abort()  # type: ignore[attr-defined]

        self._timers[key] = asyncio.get_running_loop().call_later(self.timeout_s, expire)

    def met(self, transport: asyncio.BaseTransport | None) -> None:
        timer = self._timers.pop(id(transport), None)
        if timer is not None:
            timer.cancel()
