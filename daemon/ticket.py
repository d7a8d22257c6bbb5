"""A job in the queue (its event channel, state and figures) and a model resident in the runner."""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from rk.daemon.events import FINAL, Event
from rk.daemon.jobs import EmbedJob, Job, JobStats
from rk.daemon.models import Manifest


@dataclass(eq=False)
class Ticket:
    """A job in the queue: its own event channel, state and figures."""

    id: str
    job: Job
    manifest: Manifest
    client_id: str
    arrived: float
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    state: str = "waiting"  # waiting | loading | prefill | generating | embedding | finished
    position: int = 0
    cursor: int = 0  # embed jobs: index of the next text to run
    started: float | None = None
    generated: int = 0
    finished: bool = False
    cancel_requested: bool = False
    timed_out: bool = False
    sent: tuple[int, int] | None = None  # the runner command running this job, or already queued for it
    stats: JobStats = field(default_factory=JobStats)

    def emit(self, ev: Event) -> None:
        if self.finished:
            return
        if isinstance(ev, FINAL):
            self.finished = True
            self.state = "finished"
        self.events.put_nowait(ev)

    async def stream(self) -> AsyncIterator[Event]:
        """Every event of this job, ending with its one final `Done` or `Failed`."""
        while True:
            ev = await self.events.get()
            yield ev
            if isinstance(ev, FINAL):
                return

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def total(self) -> int:
        return len(self.job.texts) if isinstance(self.job, EmbedJob) else 0


@dataclass
class Resident:
    """A model loaded in the runner."""

    name: str
    backend: str
    loaded_at: float
    memory_mb: float
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own facts, e.g. CPU threads
    expires: float = math.inf  # monotonic time; inf = kept until unloaded
    wall_expires: float = math.inf
