"""A deterministic backend with no model weights, for load tests and benchmarks of everything around a backend.

Tokens are the prompt's words in turn, at `params.tokens_per_s`; vectors are hashed bag-of-words.
Prompts containing `[[crash]]` or `[[hang]]` make the runner abort or stall, to exercise fault handling.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

import numpy as np

from typing import Any

from rk.daemon.backends.base import EmbedResult, GenResult, RunnerConfig, Sink, l2_normalise
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenSpec
from rk.daemon.models import Manifest


class SyntheticModel:
    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._rate = float(manifest.params.get("tokens_per_s", 2000.0))
        self._dim = int(manifest.params.get("dim", 64))
        self.chat_template: str | None = manifest.template
        if manifest.params.get("crash_on_load"):
            os.abort()

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        text = " ".join(m.content for m in spec.chat_messages())
        words = text.split() or ["…"]
        if len(words) > self.manifest.context_length:
            raise RkError("prompt_too_large", f"prompt is {len(words)} tokens; {self.manifest.name} takes {self.manifest.context_length}")
        if "[[crash]]" in text:
            os.abort()
        if "[[hang]]" in text:
            time.sleep(3600)
        opts = spec.options
        natural = int(self.manifest.params.get("reply_tokens", 0)) or len(words)
        limit = natural if opts.max_tokens is None else min(natural, opts.max_tokens)
        t0 = time.perf_counter()
        sink.prefill((time.perf_counter() - t0) * 1000, len(words))
        t1 = time.perf_counter()
        n = 0
        while n < limit and not stop.is_set():
            due = t1 + (n + 1) / self._rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sink.token(words[n % len(words)] + " ")
            n += 1
        return GenResult(prefill_tokens=len(words), generate_ms=(time.perf_counter() - t1) * 1000,
                         generate_tokens=n, memory_mb=1.0, finish_reason="length" if limit < natural and n == limit else "stop")

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self._dim] += 1.0
        return EmbedResult(l2_normalise(out), [len(t.split()) for t in texts])

    def abort(self) -> None:
        """Nothing to interrupt: generation checks the stop event per token."""

    def memory_mb(self) -> float:
        return 1.0

    def close(self) -> None:
        pass


def load(manifest: Manifest, config: RunnerConfig) -> SyntheticModel:
    return SyntheticModel(manifest)
