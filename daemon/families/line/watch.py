"""The `watch` op: a stream of status snapshots for `rk top`, which must never slow the queue down.

Each watcher is one task on its connection. It sends the daemon's status when the scheduler reports a
change (at most `MAX_RATE` per second: changes in between are folded into the next, latest snapshot)
and a heartbeat snapshot every `HEARTBEAT_S` even when nothing changed. It never awaits the client:
while the connection's write buffer holds more than `BUFFER_LIMIT` bytes (a client that stopped
reading), snapshots are skipped until it drains, so a stuck watcher costs one buffer, not the queue.

A watch ends when its connection closes (`rk top` quits or loses the daemon).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from rk.protocol import HostView

if TYPE_CHECKING:
    from rk.daemon.service import Service


class Watcher(Protocol):
    """What a watch needs of the line-protocol connection it streams on."""

    service: Service
    writer: asyncio.StreamWriter

    def send(self, obj: dict[str, Any]) -> None: ...

MAX_RATE = 10.0  # snapshots per second, at most
HEARTBEAT_S = 1.0
BUFFER_LIMIT = 64 * 1024  # bytes waiting in the transport before a watcher is treated as slow
MIN_TICKS = 50  # clock ticks (1/100 s, summed over CPUs) between two CPU readings


class CpuMeter:
    """Whole-machine CPU use since the previous reading (from /proc/stat), shown when there is no NPU."""

    def __init__(self, proc_stat: Path = Path("/proc/stat")) -> None:
        self.proc_stat = proc_stat
        self._last: tuple[int, int] | None = None
        self._percent: float | None = None

    def percent(self) -> float | None:
        """Busy share of all CPUs in %, or the 1-minute load average per CPU where /proc is missing (macOS)."""
        try:
            with open(self.proc_stat, "rb") as f:  # procfs: served from memory, never blocks
                ticks = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return self._load_average()
        idle, total = ticks[3] + ticks[4], sum(ticks)
        if self._last is None:  # first reading: nothing to compare with yet
            self._last = (idle, total)
            return self._load_average()
        if total - self._last[1] >= MIN_TICKS:  # too few ticks apart reads as noise: keep the last figure
            busy = 1 - (idle - self._last[0]) / (total - self._last[1])
            self._last, self._percent = (idle, total), round(100.0 * busy, 1)
        return self._percent if self._percent is not None else self._load_average()

    @staticmethod
    def _load_average() -> float | None:
        with contextlib.suppress(OSError, AttributeError):
            return round(min(100.0, os.getloadavg()[0] / (os.cpu_count() or 1) * 100), 1)
        return None


def snapshot(service: Service, cpu: CpuMeter) -> dict[str, Any]:
    """The daemon's status plus what a dashboard header needs and the scheduler does not know."""
    host = HostView(socket.gethostname(), round(time.time(), 3), cpu.percent(), os.cpu_count() or 1)
    return msgspec.to_builtins(msgspec.structs.replace(service.status(), host=host))


def buffered(conn: Watcher) -> int:
    """Bytes written to the connection that the client has not taken yet."""
    transport = conn.writer.transport
    return transport.get_write_buffer_size() if transport is not None else 0


async def stream(conn: Watcher, rid: str) -> None:
    """Push snapshots to one watcher until its connection closes."""
    scheduler = conn.service.scheduler
    changed = scheduler.watch()
    cpu = CpuMeter()
    try:
        while not conn.writer.is_closing():
            changed.clear()  # before reading the state, so a change during the send is not lost
            if buffered(conn) <= BUFFER_LIMIT:
                conn.send({"id": rid, "ev": "snapshot", **snapshot(conn.service, cpu)})
            sent = time.monotonic()
            await asyncio.sleep(1 / MAX_RATE)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, HEARTBEAT_S - (time.monotonic() - sent)))
    finally:
        scheduler.unwatch(changed)
