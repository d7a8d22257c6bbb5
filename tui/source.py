"""Where the dashboard's snapshots come from and where its actions go: the daemon, over asyncio.

The app depends on the `SnapshotSource` protocol only, so tests can feed it fixed snapshots.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, AsyncIterator, Protocol

from rk.client import DaemonUnavailable, Endpoint
from rk.protocol import check, decode_event, encode_request, is_final
from rk.tui.snapshot import QueueSnapshot

LINE_LIMIT = 16 * 1024 * 1024  # a snapshot of a full queue is large; the default 64 KiB is not enough


class SnapshotSource(Protocol):
    def describe(self) -> str: ...

    def snapshots(self) -> AsyncIterator[QueueSnapshot]:
        """Snapshots until the link breaks; raises ConnectionError (DaemonUnavailable) then."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job; raises DaemonError when the daemon refuses."""

    async def unload(self, model: str) -> None:
        """Unload a model (queued behind the jobs ahead of it); raises DaemonError when refused."""


class DaemonSource:
    """A daemon at an endpoint: one `watch` connection for snapshots, a short one per action."""

    def __init__(self, endpoint: Endpoint, stale_s: float = 5.0) -> None:
        self.endpoint = endpoint
        self.stale_s = stale_s  # no snapshot for this long (heartbeats are 1 s) = the link is dead
        self._ids = itertools.count(1)

    def describe(self) -> str:
        return self.endpoint.describe()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await asyncio.to_thread(self.endpoint.connect, self.stale_s)  # name lookup and connect may block
        if self.endpoint.host:
            return await asyncio.open_connection(sock=sock, limit=LINE_LIMIT)
        return await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)

    def _request(self, op: str, **fields: Any) -> tuple[str, bytes]:
        rid = f"top{next(self._ids)}"
        return rid, encode_request(rid, op, self.endpoint.api_key, fields)

    async def _events(self, reader: asyncio.StreamReader, rid: str, timeout: float | None) -> AsyncIterator[dict[str, Any]]:
        """Events for `rid` as they arrive; raises DaemonError on an `error` event."""
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout)
            except asyncio.TimeoutError:
                raise DaemonUnavailable(f"no word from the daemon for {timeout:.0f} s") from None
            if not line:
                raise DaemonUnavailable("the daemon closed the connection")
            ev = decode_event(line)
            if ev.get("id") == rid:
                yield check(ev)

    async def snapshots(self) -> AsyncIterator[QueueSnapshot]:
        reader, writer = await self._open()
        try:
            rid, line = self._request("watch")
            writer.write(line)
            async for ev in self._events(reader, rid, self.stale_s):
                yield QueueSnapshot.from_wire(ev, time.time())
        finally:
            writer.close()

    async def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait, however long the queue ahead of it is, for its final event."""
        reader, writer = await self._open()
        try:
            rid, line = self._request(op, **fields)
            writer.write(line)
            events = self._events(reader, rid, None)
            ev = await anext(events)
            while not is_final(op, ev):
                ev = await anext(events)
            return ev
        finally:
            writer.close()

    async def cancel(self, job_id: str) -> None:
        await self._call("cancel", target=job_id)

    async def unload(self, model: str) -> None:
        await self._call("unload", model=model)
