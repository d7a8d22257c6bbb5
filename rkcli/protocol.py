"""The line protocol's shared parts: how a request is written, how an event is read, which events end a
request, and the schema of the daemon's status snapshot, which the daemon writes and `rk top` reads."""
from __future__ import annotations

from typing import Any

import msgspec
import orjson

# A request ends with exactly one of these; `watch` never ends (its snapshots stream until close).
FINAL_EVENTS = frozenset({"done", "error", "models", "model", "version", "snapshot"})
STREAMING_OPS = frozenset({"watch"})


class DaemonError(RuntimeError):
    """The daemon answered a request with an `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_request(rid: str, op: str, key: str | None, fields: dict[str, Any]) -> bytes:
    """One request line; fields set to None are left out."""
    msg = {"id": rid, "op": op, **{k: v for k, v in fields.items() if v is not None}}
    if key:
        msg["key"] = key
    return orjson.dumps(msg) + b"\n"


def decode_event(line: bytes) -> dict[str, Any]:
    ev = orjson.loads(line)
    if not isinstance(ev, dict):
        raise ValueError(f"not an event: {line[:80]!r}")
    return ev


def check(ev: dict[str, Any]) -> dict[str, Any]:
    """The event itself, or its `error` raised as DaemonError."""
    if ev.get("ev") == "error":
        raise DaemonError(str(ev.get("code", "error")), str(ev.get("message", "")))
    return ev


def is_final(op: str, ev: dict[str, Any]) -> bool:
    """Whether `ev` is the last event of a request of `op` (a `watch` has none)."""
    return op not in STREAMING_OPS and ev.get("ev") in FINAL_EVENTS


# ---- the daemon's status: one schema for the daemon that writes it and every client that reads it -------
# (`status`/`watch` snapshots, `rk ps`, `rk top`, `/metrics`, `/health`). Every field has a default, so a
# client reads an older or newer daemon's snapshot; unknown fields are ignored.

class Progress(msgspec.Struct, frozen=True):
    done: int = 0
    total: int | None = None  # tokens the job may still write (its max_tokens or what its context leaves), or texts
    unit: str = ""  # "tokens" or "texts"


class JobView(msgspec.Struct, frozen=True):
    """A job in the queue, the running ones first."""

    id: str = ""
    client_id: str = ""  # whose job: a hashed API key, an address or a Unix user (RK_CLIENT_MAX_JOBS counts by it)
    kind: str = ""  # chat | embed | load | unload
    model: str = ""
    source: str = ""  # the API it came through
    peer: str = ""
    state: str = ""  # waiting | loading | prefill | generating | thinking | answering | calling tool | embedding
    position: int = 0
    waited_ms: float = 0.0
    progress: Progress | None = None
    tokens_per_s: float | None = None


class RecentJob(msgspec.Struct, frozen=True):
    """A finished job, newest first, with its figures."""

    id: str = ""
    kind: str = ""
    model: str = ""
    source: str = ""
    outcome: str = ""  # done, or an error code
    wait_ms: float = 0.0
    load_ms: float = 0.0
    prefill_ms: float = 0.0
    prefill_tokens: int = 0
    cached_tokens: int = 0
    generate_ms: float = 0.0
    generate_tokens: int = 0
    total_ms: float = 0.0
    finish_reason: str = ""


class LoadedView(msgspec.Struct, frozen=True):
    name: str = ""
    backend: str = ""
    memory_mb: float = 0.0
    loaded_at: float = 0.0
    expires_at: float | None = None  # wall-clock time; None = kept until unloaded
    num_ctx: int = 0  # the context it was loaded with, tokens
    details: dict[str, Any] = {}  # the backend's own facts, e.g. llamacpp's threads


class RunnerView(msgspec.Struct, frozen=True):
    pid: int | None = None
    rss_mb: float = 0.0
    restarts: int = 0
    state: str = "ready"  # ready | starting | down: whether the runner can serve (`/health`)
    down_reason: str | None = None


class LoadView(msgspec.Struct, frozen=True):
    """The board's load as balancers see it (the daemon's `busy.py` computes it)."""

    predicted_wait_s: float = 0.0  # until a job submitted now would start
    job_s: float = 0.0  # the mean run time of recent jobs
    kv_cache_usage: float = 0.0  # 0-1: the running chat's share of its context
    draining: bool = False  # `rk drain`: balancers send no new jobs


class PullView(msgspec.Struct, frozen=True):
    """A hub download in progress (pulls never wait in the queue, but are shown with it)."""

    model: str = ""
    status: str = ""
    completed: int = 0  # bytes of all its files, present or fetched
    total: int = 0
    clients: int = 0
    started_at: float = 0.0  # wall clock


class HostView(msgspec.Struct, frozen=True):
    """The daemon's machine, as `watch` snapshots describe it for a dashboard header."""

    name: str = ""
    time: float = 0.0  # the daemon's wall clock when the snapshot was taken
    cpu_percent: float | None = None
    cpus: int = 1


class Snapshot(msgspec.Struct, frozen=True):
    queue: tuple[JobView, ...] = ()
    depth: int = 0  # waiting jobs
    running: tuple[str, ...] = ()
    loaded: tuple[LoadedView, ...] = ()
    failed_models: dict[str, str] = {}
    totals: dict[str, int] = {}
    recent: tuple[RecentJob, ...] = ()
    uptime_s: float = 0.0
    runner: RunnerView = RunnerView()
    load: LoadView = LoadView()
    closing: bool = False  # the daemon is shutting down
    pulls: tuple[PullView, ...] = ()
    version: str = "?"
    pid: int | None = None
    socket: str = ""
    tcp: str | None = None
    agent: str | None = None  # the HAProxy agent-check port, when one listens
    llama_repack: str = ""  # RK_LLAMA_REPACK as it applies to this CPU
    npu: dict[str, Any] = {}  # NPU telemetry; readings the board does not expose are "n/a"
    host: HostView | None = None  # only in `watch` snapshots

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


def snapshot_of(event: dict[str, Any]) -> Snapshot:
    """A `snapshot` event as typed values; a field of the wrong type raises `msgspec.ValidationError`."""
    return msgspec.convert({k: v for k, v in event.items() if k not in ("id", "ev")}, Snapshot)
