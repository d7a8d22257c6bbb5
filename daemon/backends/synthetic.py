"""A deterministic backend with no model weights, for load tests and benchmarks of everything around a backend.

Tokens are the prompt's words in turn, at `params.tokens_per_s`; vectors are hashed bag-of-words.
Prompts containing `[[crash]]` or `[[hang]]` make the runner abort or stall, to exercise fault handling.

Scripted replies (`params.script: true`), so tests can drive the output pipeline with exactly what a
thinking, tool-calling model writes: the last user message's text after `[[script]]` is the script,
its replies separated by `[[next]]`. Each round after that user message (one per assistant turn since)
takes the next reply, the last one repeating; `[[tool]]` in a reply stands for the contents of the tool
results since the last assistant turn (a model "answering from the result"). A reply is emitted
`params.token_chars` characters per token (default 4), so markers can arrive split at any point.
`params.segfault` stands in for a native engine that dies by SIGSEGV: `"prefill_if_repacked"` on the
prefill of a prompt (or embedding input) of more than one word when llama.cpp's weight repack would be
on for this CPU (as its AMX repack does on Sapphire Rapids; see `cpufeatures.choose_repack`),
`"prefill"` there whatever the settings, `"after_token"` once the first token was sent.
`[[hold]]` in a reply pauses emission there until the file `params.gate` exists (or the job stops), so
a test can see what reached the client before the double wrote anything more.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from rk.daemon.backends.base import EmbedResult, RunnerConfig, Sink, l2_normalise
from rk.daemon.backends.cpufeatures import choose_repack, read_cpu_features
from rk.daemon.context import prompt_too_large
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenResult, GenSpec, Message
from rk.daemon.store.models import Manifest

SCRIPT, NEXT, TOOL, HOLD = "[[script]]", "[[next]]", "[[tool]]", "[[hold]]"


def scripted_reply(messages: list[Message]) -> str | None:
    """The reply a script asks for in this round, or None when the conversation carries no script."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None or SCRIPT not in messages[last_user].content:
        return None
    replies = messages[last_user].content.split(SCRIPT, 1)[1].split(NEXT)
    later = messages[last_user + 1:]
    rounds = sum(m.role == "assistant" for m in later)
    reply = replies[min(rounds, len(replies) - 1)]
    last_assistant = max((i for i, m in enumerate(later) if m.role == "assistant"), default=-1)
    results = "; ".join(m.content for m in later[last_assistant + 1:] if m.role == "tool")
    return reply.replace(TOOL, results)


def _words(spec: GenSpec) -> list[str]:
    """The synthetic tokenizer: the words of the conversation's messages."""
    return " ".join(m.content for m in spec.chat_messages()).split() or ["…"]


def _pieces(reply: str, size: int) -> list[str]:
    """The reply cut into tokens of `size` characters; `[[hold]]` stays one piece of its own."""
    out: list[str] = []
    for i, part in enumerate(reply.split(HOLD)):
        if i:
            out.append(HOLD)
        out.extend(part[j:j + size] for j in range(0, len(part), size))
    return out


class SyntheticModel:
    def __init__(self, manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> None:
        self.manifest = manifest
        self.n_ctx = num_ctx or manifest.context_length  # words, like its tokens
        self._segfault = str(manifest.params.get("segfault", ""))
        self.repack = choose_repack(config.cpu.repack, read_cpu_features(config.sysfs_root), config.cpu.safe)
        self._rate = float(manifest.params.get("tokens_per_s", 2000.0))
        self._dim = int(manifest.params.get("dim", 64))
        self._script = bool(manifest.params.get("script", False))
        self._token_chars = max(1, int(manifest.params.get("token_chars", 4)))
        gate = manifest.params.get("gate")
        self._gate = Path(gate) if gate else None
        self.chat_template: str | None = manifest.template
        if manifest.params.get("crash_on_load"):
            os.abort()

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        messages = spec.chat_messages()
        text = " ".join(m.content for m in messages)
        words = _words(spec)
        if len(words) > self.n_ctx:
            raise prompt_too_large(self.manifest.name, len(words), self.n_ctx)
        if "[[crash]]" in text:
            os.abort()
        self._prefill(words)
        self._long_prefill(words, sink, stop)
        if "[[hang]]" in text:
            time.sleep(3600)
        reply = scripted_reply(messages) if self._script and not spec.raw else None
        if reply is not None:
            tokens = _pieces(reply, self._token_chars)
        else:
            tokens = [w + " " for w in words]
        opts = spec.options
        natural = len(tokens) if reply is not None else int(self.manifest.params.get("reply_tokens", 0)) or len(words)
        limit = natural if opts.max_tokens is None else min(natural, opts.max_tokens)
        t0 = time.perf_counter()
        sink.prefill((time.perf_counter() - t0) * 1000, len(words))
        t1 = time.perf_counter()
        n = 0
        while n < limit and not stop.is_set():
            piece = tokens[n % len(tokens)]
            if piece == HOLD:
                self._wait_gate(stop)
                t1 = time.perf_counter() - n / self._rate  # the pause does not make the next tokens burst
                n += 1
                continue
            due = t1 + (n + 1) / self._rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sink.token(piece)
            n += 1
            if self._segfault == "after_token":
                os.kill(os.getpid(), signal.SIGSEGV)
        return GenResult(prefill_tokens=len(words), generate_ms=(time.perf_counter() - t1) * 1000,
                         generate_tokens=n, memory_mb=1.0, finish_reason="length" if limit < natural and n == limit else "stop")

    def _prefill(self, words: list[str]) -> None:
        """Die as a faulting native kernel does, on a multi-token prefill (see `params.segfault`)."""
        crash = self._segfault == "prefill" or (self._segfault == "prefill_if_repacked" and self.repack.on)
        if crash and len(words) > 1:
            os.kill(os.getpid(), signal.SIGSEGV)

    def _long_prefill(self, words: list[str], sink: Sink, stop: threading.Event) -> None:
        """Take `params.prefill_s` seconds, reporting progress every tenth of it: a long prompt on a slow board."""
        slow = float(self.manifest.params.get("prefill_s", 0.0))
        for step in range(10 if slow > 0 else 0):
            if stop.wait(slow / 10):
                return
            sink.prefilling(len(words) * (step + 1) // 10, len(words))

    def _wait_gate(self, stop: threading.Event) -> None:
        """Block at a `[[hold]]` until the gate file appears or the job is stopped."""
        if self._gate is None:
            raise RkError("model_failed", f"{self.manifest.name}: a [[hold]] in a script needs params.gate")
        while not self._gate.exists() and not stop.wait(0.01):
            pass

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        self._prefill([w for t in texts for w in t.split()])
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self._dim] += 1.0
        return EmbedResult(l2_normalise(out), [len(t.split()) for t in texts])

    def abort(self) -> None:
        """Nothing to interrupt: generation checks the stop event per token."""

    def prepare(self, spec: GenSpec) -> list[int]:
        """The prompt's tokens (its words, one id each), so counting works as on the real backends."""
        return [zlib.crc32(w.encode()) for w in _words(spec)]

    def details(self) -> dict[str, Any]:
        return {"tokens_per_s": self._rate, "num_ctx": self.n_ctx,
                **({"repack": str(self.repack)} if self._segfault else {})}

    def memory_mb(self) -> float:
        return 1.0

    def close(self) -> None:
        pass


def load(manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> SyntheticModel:
    return SyntheticModel(manifest, config, num_ctx)
