"""One typed status of the daemon, built in one place and rendered by every view: the line protocol's
`status`/`watch`, `/api/ps`, `/metrics`, `rk ps` and `rk top`."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rk.daemon.busy import Load
from rk.daemon.jobs import ChatJob, EmbedJob
from rk.daemon.residency import Resident
from rk.daemon.store.pull.events import PullView
from rk.daemon.ticket import GENERATING, Ticket


@dataclass(frozen=True)
class Progress:
    done: int
    total: int | None
    unit: str  # "texts" or "tokens"


@dataclass(frozen=True)
class JobView:
    id: str
    client_id: str
    kind: str
    model: str
    source: str
    peer: str
    state: str
    position: int
    waited_ms: float
    progress: Progress | None = None
    tokens_per_s: float | None = None

    @classmethod
    def of(cls, t: Ticket, now: float) -> JobView:
        progress, rate = None, None
        if isinstance(t.job, EmbedJob):
            progress = Progress(t.cursor, t.total, "texts")
        elif isinstance(t.job, ChatJob):
            opts = t.job.options  # resolved: num_ctx is the context it runs in
            room = (opts.num_ctx - t.stats.prefill_tokens - t.stats.cached_tokens) if opts.num_ctx else None
            limits = [n for n in (opts.max_tokens, room) if n is not None]
            progress = Progress(t.generated, min(limits) if limits else None, "tokens")
            if t.state in GENERATING and t.started is not None and t.generated:
                elapsed = now - t.started - t.stats.prefill_ms / 1000 - t.stats.load_ms / 1000
                rate = round(t.generated / elapsed, 2) if elapsed > 0 else None
        return cls(t.id, t.client_id, t.kind, t.manifest.name, t.job.source, t.job.peer, t.state, t.position,
                   round(((t.started or now) - t.arrived) * 1000, 1), progress, rate)


@dataclass(frozen=True)
class LoadedView:
    name: str
    backend: str
    memory_mb: float
    loaded_at: float
    expires_at: float | None  # wall-clock time; None = kept until unloaded
    num_ctx: int = 0  # the context it was loaded with, tokens
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own facts, e.g. llamacpp's threads

    @classmethod
    def of(cls, r: Resident, now_wall: float) -> LoadedView:
        return cls(r.name, r.manifest.backend, round(r.memory_mb, 1), r.loaded_at,
                   None if math.isinf(r.wall_expires) else r.wall_expires, r.num_ctx, dict(r.details))


@dataclass(frozen=True)
class RunnerView:
    pid: int | None
    rss_mb: float
    restarts: int
    state: str = "ready"  # ready | starting | down: whether the runner can serve (`/health`)
    down_reason: str | None = None


@dataclass(frozen=True)
class Status:
    queue: tuple[JobView, ...]
    depth: int  # waiting jobs
    running: tuple[str, ...]
    loaded: tuple[LoadedView, ...]
    failed_models: dict[str, str]
    totals: dict[str, int]
    recent: tuple[dict[str, Any], ...]
    uptime_s: float
    runner: RunnerView
    load: Load = Load(0.0, 0.0, 0.0, False)  # predicted wait and drain, for balancers (busy.py)
    closing: bool = False  # the daemon is shutting down
    pulls: tuple[PullView, ...] = ()  # hub downloads: they never wait in the queue, but are shown with it
    extra: dict[str, Any] = field(default_factory=dict)  # daemon-wide facts: version, socket, NPU, host

    @property
    def state(self) -> str:
        """What `/health` and the agent port say: shutting_down, down or starting (the board cannot
        serve: 503), draining (`rk drain`) or ready."""
        if self.closing:
            return "shutting_down"
        if self.runner.state != "ready":
            return self.runner.state
        return "draining" if self.load.draining else "ready"

    def loaded_model(self, name: str) -> LoadedView | None:
        return next((m for m in self.loaded if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["totals"] = d["totals"] | {"runner_restarts": self.runner.restarts}
        return d | extra


def job_views(tickets: list[Ticket]) -> tuple[JobView, ...]:
    now = time.monotonic()
    return tuple(JobView.of(t, now) for t in tickets)
