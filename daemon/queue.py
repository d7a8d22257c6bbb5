"""ONE first-in-first-out queue for every job from every protocol: places, positions, cancel, timeouts.

A job's place is fixed at arrival; its position (jobs ahead of it, the running ones included, + 1)
is pushed to it whenever it changes. This module only orders and tracks tickets: what runs them is
the scheduler's business.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Callable, Iterator

from rk.daemon.errors import RkError
from rk.daemon.events import Queued
from rk.daemon.jobs import Job
from rk.daemon.store.models import Manifest
from rk.daemon.ticket import Ticket


class JobQueue:
    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.waiting: deque[Ticket] = deque()
        self.running: list[Ticket] = []
        self._tickets: dict[str, Ticket] = {}
        self._ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._watchers: set[asyncio.Event] = set()

    def add(self, job: Job, manifest: Manifest, client_id: str) -> Ticket:
        """A new ticket at the tail; `queue_full` when too many wait already."""
        if len(self.waiting) >= self.max_waiting:
            raise RkError("queue_full", f"the queue is full ({self.max_waiting} jobs waiting); retry later")
        t = Ticket(id=f"j{next(self._ids)}", job=job, manifest=manifest, client_id=client_id, arrived=time.monotonic())
        self._tickets[t.id] = t
        self.waiting.append(t)
        self.reposition()
        self._arrived.set()
        return t

    def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    def forget(self, t: Ticket) -> None:
        """A finished ticket leaves the lookup table."""
        self._tickets.pop(t.id, None)

    def remove(self, t: Ticket) -> bool:
        """Take a waiting ticket out of line; False if it is not waiting."""
        if t not in self.waiting:
            return False
        self.waiting.remove(t)
        self.reposition()
        return True

    def requeue(self, t: Ticket, *, front: bool = False) -> None:
        """Put a started ticket back in line: at the tail (the rest of an embedding job), or at the head
        (a job that never began because the runner died under it keeps its place)."""
        t.state = "waiting"
        if front:
            self.waiting.appendleft(t)
        else:
            self.waiting.append(t)
        self._arrived.set()

    def take(self, pick: Callable[[deque[Ticket]], list[Ticket]]) -> list[Ticket]:
        """Start the tickets `pick` removes from the head of the line."""
        batch = pick(self.waiting)
        self.running = batch
        self.reposition()
        return batch

    def done_running(self) -> None:
        self.running = []
        self.reposition()

    async def wait_for_work(self, timeout: float | None) -> None:
        """Return when a job is waiting, or after `timeout` seconds (None: no limit)."""
        if self.waiting:
            return
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def expired(self, limit_s: float) -> list[Ticket]:
        """Tickets that waited longer than `limit_s` without ever starting, taken out of line."""
        now = time.monotonic()
        out = [t for t in self.waiting if t.started is None and now - t.arrived > limit_s]
        for t in out:
            self.waiting.remove(t)
        if out:
            self.reposition()
        return out

    def reposition(self) -> None:
        ahead = len(self.running)
        for i, t in enumerate(self.waiting):
            pos = ahead + i + 1
            if pos != t.position:
                t.position = pos
                t.emit(Queued(pos))
        self.changed()

    def __iter__(self) -> Iterator[Ticket]:
        """Running tickets first, then the waiting ones in order."""
        return itertools.chain(self.running, self.waiting)

    # ---- change notification (rk top, watch) ----------------------------------------------------

    def changed(self) -> None:
        for w in self._watchers:
            w.set()

    def watch(self) -> asyncio.Event:
        """An event set whenever the queue's state changes; `unwatch` it when done."""
        ev = asyncio.Event()
        self._watchers.add(ev)
        return ev

    def unwatch(self, ev: asyncio.Event) -> None:
        self._watchers.discard(ev)
