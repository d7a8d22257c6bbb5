"""The one small interface every backend implements, and the request/result types it exchanges."""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from rk.daemon.jobs import GenResult, GenSpec
from rk.daemon.store.models import Manifest


@dataclass(frozen=True)
class CpuOptions:
    """Options of the CPU backends (hf, llamacpp)."""

    threads: int = 0  # 0 = chosen by the backend from the machine's cores
    repack: str = "auto"  # llama.cpp weight repack: auto (off where the CPU has AMX), on, off
    safe: bool = False  # a reload after the engine crashed: the safest engine settings, whatever the others


@dataclass(frozen=True)
class RkllmOptions:
    """Options of the NPU backend."""

    lib: str | None = None  # librkllmrt.so path; None = the loader's search path
    version: str | None = None  # "1.2" / "1.3" when detection from the library's bytes is not possible


SAFE_SETTINGS = "llama.cpp weight repack off"  # what `RunnerConfig.safe()` changes, for logs and errors


@dataclass(frozen=True)
class RunnerConfig:
    """What a runner process needs from `Settings`: one section per backend family, so a new backend
    adds a section here instead of fields to every layer."""

    sysfs_root: str = "/"
    cpu: CpuOptions = CpuOptions()
    rkllm: RkllmOptions = RkllmOptions()
    preload: tuple[str, ...] = ()  # backends to import while the runner is idle (the default chat model's)

    def safe(self) -> RunnerConfig:
        """These settings for a model reloaded after it crashed the engine in its first prefill."""
        return replace(self, cpu=replace(self.cpu, safe=True))


class Sink(Protocol):
    """Where a backend reports progress; the runner forwards each call to the daemon at once."""

    def prefilling(self, done: int, total: int) -> None:
        """A long prefill's progress, at most every few hundred tokens: silence longer than RK_STALL_TIMEOUT
        is taken for a hung engine."""
        ...

    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None: ...

    def token(self, text: str) -> None: ...


@dataclass
class EmbedResult:
    vectors: np.ndarray  # float32 (n, dim), L2-normalised rows
    tokens: list[int]  # tokens per input text


class LoadedModel(Protocol):
    """A model resident in a runner. `abort` is called from another thread, and so is `prepare(spec)`
    (tokenise and template ahead of time, while the job before generates; its result arrives as
    `prepared`, and None means there was nothing to do ahead).

    `spec.options` arrive merged with the manifest's defaults; stop strings are the runner's job.
    """

    manifest: Manifest
    chat_template: str | None  # the Jinja template the model was taught with (its output parser reads it); None: unknown

    def prepare(self, spec: GenSpec) -> Any: ...

    def details(self) -> dict[str, Any]:
        """The backend's own facts shown with the loaded model (e.g. the CPU threads chosen)."""
        ...

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult: ...

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult: ...

    def abort(self) -> None: ...

    def memory_mb(self) -> float: ...

    def close(self) -> None: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest shared prefix of two token sequences (what a KV cache can keep)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable_prefix(held: Sequence[int], held_media: tuple[str, ...], ids: Sequence[int], media: tuple[str, ...]) -> int:
    """How much of a KV cache holding `held` (made with the images `held_media`) can serve the prompt `ids`
    with the images `media`: their common token prefix, and nothing when the images differ. A backend that
    does not place image tokens where their images are must treat the whole prompt as depending on every
    image: the same text beside another picture never reuses that picture's cache."""
    return common_prefix(held, ids) if held_media == media else 0


def check_files(manifest: Manifest, *keys: str) -> list[Path]:
    """Paths of the named files, failing clearly when one is missing."""
    from rk.daemon.errors import RkError

    paths = [manifest.path(k) for k in keys]
    for p in paths:
        if not p.exists():
            raise RkError("model_failed", f"model {manifest.name}: missing file {p}")
    return paths
