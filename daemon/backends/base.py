"""The one small interface every backend implements, and the request/result types it exchanges."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rk.daemon.jobs import GenOptions
from rk.daemon.models import Manifest


@dataclass(frozen=True)
class RunnerConfig:
    """The settings a runner process needs (a subset of `Settings`, passed on its command line)."""

    threads: int = 0
    rkllm_lib: str | None = None
    rkllm_version: str | None = None
    sysfs_root: str = "/"
    preload: tuple[str, ...] = ()  # backends to import while the runner is idle (the default chat model's)


@dataclass(frozen=True)
class GenRequest:
    """A generation as the backend sees it: options already merged with the model's defaults."""

    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: str | None = None
    raw: bool = False
    options: GenOptions = GenOptions()
    # The backend's own `prepare(req)` result (e.g. token ids), computed on another thread while the
    # job before this one generated; None when the backend has no `prepare` or it was not run ahead.
    prepared: Future[Any] | None = field(default=None, compare=False)


@dataclass
class GenResult:
    prefill_ms: float = 0.0
    prefill_tokens: int = 0  # computed in this job
    generate_ms: float = 0.0
    generate_tokens: int = 0
    memory_mb: float = 0.0
    finish_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 0  # the whole prompt (0 = same as prefill_tokens)
    cached_tokens: int = 0  # prompt tokens served from the KV cache of an earlier job

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Sink(Protocol):
    """Where a backend reports progress; the runner forwards each call to the daemon at once."""

    def prefill(self, ms: float, tokens: int) -> None: ...

    def token(self, text: str) -> None: ...


@dataclass
class EmbedResult:
    vectors: np.ndarray  # float32 (n, dim), L2-normalised rows
    tokens: list[int]  # tokens per input text


class LoadedModel(Protocol):
    """A model resident in a runner. `abort` is called from another thread, and so is the optional
    `prepare(req)` (tokenise and template ahead of time; its result arrives as `req.prepared`).
    An optional `details()` dict (e.g. the CPU threads chosen) is shown with the loaded model."""

    manifest: Manifest

    def generate(self, req: GenRequest, sink: Sink, stop: threading.Event) -> GenResult: ...

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult: ...

    def abort(self) -> None: ...

    def memory_mb(self) -> float: ...

    def close(self) -> None: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_options(manifest: Manifest, options: GenOptions) -> GenOptions:
    """The job's options over the model's defaults."""
    merged = dict(manifest.defaults)
    merged.update(options.to_dict())
    return GenOptions.from_dict({k: v for k, v in merged.items() if k in GenOptions.__dataclass_fields__})


def check_files(manifest: Manifest, *keys: str) -> list[Path]:
    """Paths of the named files, failing clearly when one is missing."""
    from rk.daemon.errors import RkError

    paths = [manifest.path(k) for k in keys]
    for p in paths:
        if not p.exists():
            raise RkError("model_failed", f"model {manifest.name}: missing file {p}")
    return paths
