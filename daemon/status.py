"""The daemon's status, built in one place as the one schema its readers share (`rk.protocol.Snapshot`):
the line protocol's `status`/`watch`, `/api/ps`, `/metrics`, `/health`, the agent port, `rk ps`, `rk top`."""
from __future__ import annotations

import math

from rk.daemon.jobs import ChatJob, EmbedJob, JobStats
from rk.daemon.residency import Resident
from rk.daemon.ticket import GENERATING, Ticket
from rk.protocol import JobView, LoadedView, Progress, RecentJob


def job_view(t: Ticket, now: float) -> JobView:
    """A queued or running job; a chat's budget is its max_tokens or what its context leaves."""
    progress, rate = None, None
    if isinstance(t.job, EmbedJob):
        progress = Progress(t.cursor, t.total, "texts")
    elif isinstance(t.job, ChatJob) and t.state == "prefill" and t.prefilled is not None:
        progress = Progress(t.prefilled[0], t.prefilled[1], "prompt tokens")
    elif isinstance(t.job, ChatJob):
        opts = t.job.options  # resolved: num_ctx is the context it runs in
        room = (opts.num_ctx - t.stats.prefill_tokens - t.stats.cached_tokens) if opts.num_ctx else None
        limits = [n for n in (opts.max_tokens, room) if n is not None]
        progress = Progress(t.generated, min(limits) if limits else None, "tokens")
        if t.state in GENERATING and t.started is not None and t.generated:
            elapsed = now - t.started - t.stats.prefill_ms / 1000 - t.stats.load_ms / 1000
            rate = round(t.generated / elapsed, 2) if elapsed > 0 else None
    return JobView(t.id, t.client_id, t.kind, t.manifest.name, t.job.source, t.job.peer, t.state, t.position,
                   round(((t.started or now) - t.arrived) * 1000, 1), progress, rate)


def loaded_view(r: Resident) -> LoadedView:
    return LoadedView(r.name, r.manifest.backend, round(r.memory_mb, 1), r.loaded_at,
                      None if math.isinf(r.wall_expires) else r.wall_expires, r.num_ctx, dict(r.details))


def recent_job(t: Ticket, outcome: str) -> RecentJob:
    s: JobStats = t.stats
    return RecentJob(t.id, t.kind, t.manifest.name, t.job.source, outcome, round(s.wait_ms, 3), round(s.load_ms, 3),
                     round(s.prefill_ms, 3), s.prefill_tokens, s.cached_tokens, round(s.generate_ms, 3),
                     s.generate_tokens, round(s.total_ms, 3), s.finish_reason)

