"""A job in the queue: its event channel, state and figures."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator

from rk.daemon.errors import RkError
from rk.daemon.events import FINAL, Event
from rk.daemon.jobs import EmbedJob, Job, JobStats
from rk.daemon.store.models import Manifest

if TYPE_CHECKING:
    from rk.daemon.runner.proxy import Call

# A chat's phases once its first token is out (`rk top` shows them): the model reasons, answers, or
# writes a tool call; "generating" until the first piece says which.
GENERATING = ("generating", "thinking", "answering", "calling tool")


@dataclass(eq=False)
class Ticket:
    """A job in the queue: its own event channel, state and figures."""

    id: str
    job: Job
    manifest: Manifest
    client_id: str
    arrived: float
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    state: str = "waiting"  # waiting | loading | prefill | one of GENERATING | embedding | finished
    position: int = 0
    cursor: int = 0  # embed jobs: index of the next text to run
    started: float | None = None
    generated: int = 0
    prefilled: tuple[int, int] | None = None  # a long prefill's (done, total) prompt tokens, while it runs
    finished: bool = False
    cancel_requested: bool = False
    stop_reason: RkError | None = None  # why the daemon itself stopped this running job (timeout, slow client)
    backlog_since: float | None = None  # when its client started leaving more than BACKLOG_LIMIT events unread
    retries: int = 0  # times it was sent again because the runner died before it began
    sent: Call | None = None  # the runner command running this job, or already queued for it
    stats: JobStats = field(default_factory=JobStats)

    @property
    def unread(self) -> int:
        """Events produced but not yet taken by the client's connection."""
        return self.events.qsize()

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
