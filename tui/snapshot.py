"""What every view of `rk top` reads: the daemon's `snapshot` event, decoded with the schema the daemon
writes it with (`rk.protocol.Snapshot`), shaped for display.

Decoding is tolerant (every schema field has a default, unknown fields are ignored, an "n/a" NPU
reading becomes None) so an older or newer daemon still renders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rk.protocol import HostView, JobView, Progress, PullView, RecentJob, snapshot_of


def _num(v: Any) -> float | None:
    """A reading as a float; None for "n/a", missing or malformed values."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


@dataclass(frozen=True)
class QueuedJob:
    id: str
    kind: str
    model: str
    source: str
    peer: str
    state: str  # waiting | loading | prefill | generating | thinking | answering | calling tool | embedding
    position: int
    waited_ms: float
    done: int
    total: int
    unit: str  # tokens | texts
    tokens_per_s: float | None
    client: str = ""  # whose job: a hashed API key, an address or a Unix user (RK_CLIENT_MAX_JOBS counts by it)

    @classmethod
    def of(cls, j: JobView) -> QueuedJob:
        p = j.progress or Progress()
        return cls(j.id, j.kind, j.model, j.source, j.peer, j.state, j.position, j.waited_ms, p.done, p.total or 0,
                   p.unit, j.tokens_per_s, j.client_id)


@dataclass(frozen=True)
class FinishedJob:
    id: str
    kind: str
    model: str
    source: str
    outcome: str  # done, or an error code
    wait_ms: float
    prefill_ms: float
    generate_ms: float
    generate_tokens: int

    @classmethod
    def of(cls, r: RecentJob) -> FinishedJob:
        return cls(r.id, r.kind, r.model, r.source, r.outcome, r.wait_ms, r.prefill_ms, r.generate_ms, r.generate_tokens)

    @property
    def tokens_per_s(self) -> float | None:
        return self.generate_tokens / (self.generate_ms / 1000) if self.generate_ms > 0 else None


@dataclass(frozen=True)
class LoadedModel:
    name: str
    memory_mb: float
    expires_at: float | None  # wall-clock time; None = kept until unloaded
    backend: str


@dataclass(frozen=True)
class Npu:
    """NPU telemetry (daemon/npu.py); a reading is None where it is "n/a" (no debugfs access, no devfreq)."""

    soc: str
    core_loads: tuple[float | None, ...]  # busy % per core
    freq_mhz: float | None

    @classmethod
    def from_wire(cls, d: Any) -> Npu | None:
        """None when the daemon's machine shows no NPU at all: the dashboard then shows the CPU."""
        if not isinstance(d, Mapping):
            return None
        cores = tuple(_num(c.get("percent")) for c in d.get("load") or [] if isinstance(c, Mapping))
        freq = _num(d.get("freq_mhz"))
        if not cores and freq is None:
            return None
        soc = d.get("soc")
        return cls(soc if isinstance(soc, str) and soc != "n/a" else "NPU", cores, freq)


@dataclass(frozen=True)
class QueueSnapshot:
    """One `snapshot` event. `daemon_time` is the daemon's wall clock when it was taken (keep-alive
    countdowns are computed against it, so clock skew with a remote board does not matter)."""

    version: str
    hostname: str
    endpoint: str
    uptime_s: float
    queue: tuple[QueuedJob, ...]
    loaded: tuple[LoadedModel, ...]
    recent: tuple[FinishedJob, ...]
    totals: Mapping[str, int]
    npu: Npu | None
    cpu_percent: float | None
    memory_used_mb: float | None  # the whole board's: NPU buffers live in system memory
    memory_total_mb: float | None
    runner_rss_mb: float
    daemon_time: float
    pulls: tuple[PullView, ...] = ()  # hub downloads (not queue jobs: pulls never wait for the accelerator)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], received: float) -> QueueSnapshot:
        """`received`, the local time it arrived, stands in for a daemon that does not send its clock."""
        snap = snapshot_of(dict(d))
        host = snap.host or HostView()
        memory = snap.npu.get("memory") or {}
        return cls(
            version=snap.version, hostname=host.name, endpoint=f"tcp {snap.tcp}" if snap.tcp else snap.socket,
            uptime_s=snap.uptime_s,
            queue=tuple(QueuedJob.of(j) for j in snap.queue),  # running first, then FIFO
            loaded=tuple(LoadedModel(m.name, m.memory_mb, m.expires_at, m.backend) for m in snap.loaded),
            recent=tuple(FinishedJob.of(r) for r in snap.recent), totals=snap.totals,
            npu=Npu.from_wire(snap.npu), cpu_percent=host.cpu_percent,
            memory_used_mb=_num(memory.get("used_mb")), memory_total_mb=_num(memory.get("total_mb")),
            runner_rss_mb=snap.runner.rss_mb, daemon_time=host.time or received, pulls=snap.pulls,
        )

    @property
    def running(self) -> QueuedJob | None:
        return next((j for j in self.queue if j.state != "waiting"), None)

    @property
    def backend(self) -> str:
        names = sorted({m.backend for m in self.loaded if m.backend})
        device = self.npu.soc if self.npu else "CPU"
        return f"{device} · {', '.join(names)}" if names else device
