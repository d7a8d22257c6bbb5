"""The daemon's `snapshot` event as frozen, typed values: what every view of `rk top` reads.

Parsing is tolerant (a missing field gets a neutral value, an "n/a" reading becomes None) so an older
or newer daemon still renders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


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
    def from_wire(cls, d: Mapping[str, Any]) -> QueuedJob:
        p = d.get("progress") or {}
        return cls(str(d.get("id", "")), str(d.get("kind", "")), str(d.get("model", "")),
                   str(d.get("source", "")), str(d.get("peer", "")), str(d.get("state", "")),
                   int(d.get("position") or 0), _num(d.get("waited_ms")) or 0.0,
                   int(p.get("done") or 0), int(p.get("total") or 0), str(p.get("unit", "")),
                   _num(d.get("tokens_per_s")), str(d.get("client_id", "")))


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
    def from_wire(cls, d: Mapping[str, Any]) -> FinishedJob:
        return cls(str(d.get("id", "")), str(d.get("kind", "")), str(d.get("model", "")),
                   str(d.get("source", "")), str(d.get("outcome", "")), _num(d.get("wait_ms")) or 0.0,
                   _num(d.get("prefill_ms")) or 0.0, _num(d.get("generate_ms")) or 0.0,
                   int(d.get("generate_tokens") or 0))

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
class Pull:
    """A hub download in progress (not a queue job: pulls never wait for the accelerator)."""

    model: str
    status: str
    completed: int  # bytes
    total: int

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Pull:
        return cls(str(d.get("model", "")), str(d.get("status", "")), int(d.get("completed") or 0),
                   int(d.get("total") or 0))


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
    pulls: tuple[Pull, ...] = ()

    @classmethod
    def from_wire(cls, d: Mapping[str, Any], received: float) -> QueueSnapshot:
        """`received`, the local time it arrived, stands in for a daemon that does not send its clock."""
        host = d.get("host") or {}
        memory = (d.get("npu") or {}).get("memory") or {}
        tcp = d.get("tcp")
        return cls(
            version=str(d.get("version", "?")), hostname=str(host.get("name", "")),
            endpoint=f"tcp {tcp}" if tcp else str(d.get("socket", "")),
            uptime_s=_num(d.get("uptime_s")) or 0.0,
            queue=tuple(QueuedJob.from_wire(j) for j in d.get("queue", [])),  # running first, then FIFO
            loaded=tuple(LoadedModel(str(m.get("name", "")), _num(m.get("memory_mb")) or 0.0,
                                     _num(m.get("expires_at")), str(m.get("backend", "")))
                         for m in d.get("loaded", [])),
            recent=tuple(FinishedJob.from_wire(j) for j in d.get("recent", [])),
            totals={k: int(v) for k, v in (d.get("totals") or {}).items() if isinstance(v, int)},
            npu=Npu.from_wire(d.get("npu")), cpu_percent=_num(host.get("cpu_percent")),
            memory_used_mb=_num(memory.get("used_mb")), memory_total_mb=_num(memory.get("total_mb")),
            runner_rss_mb=_num((d.get("runner") or {}).get("rss_mb")) or 0.0,
            daemon_time=_num(host.get("time")) or received,
            pulls=tuple(Pull.from_wire(p) for p in d.get("pulls") or [] if isinstance(p, Mapping)),
        )

    @property
    def running(self) -> QueuedJob | None:
        return next((j for j in self.queue if j.state != "waiting"), None)

    @property
    def backend(self) -> str:
        names = sorted({m.backend for m in self.loaded if m.backend})
        device = self.npu.soc if self.npu else "CPU"
        return f"{device} · {', '.join(names)}" if names else device
