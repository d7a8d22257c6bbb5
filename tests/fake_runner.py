"""An in-process RunnerPort for fast scheduler tests: scripted replies, gates to hold a job running,
and a record of every command the scheduler sent. No process, no model."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np

from rk.daemon import events
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenResult, GenSpec
from rk.daemon.runner import wire
from rk.daemon.runner.proxy import Call, NotBegun
from rk.daemon.store.models import Manifest


@dataclass
class FakeProcess:
    """Stands in for proxy._Process: what a Call asks of its process."""

    alive: bool = True
    pending: dict[int, Call] = field(default_factory=dict)


class FakeRunner:
    def __init__(self) -> None:
        self.restarts = 0
        self.down_reason: str | None = None
        self.state = "ready"
        self.process = FakeProcess()
        self.log: list[tuple[str, Any]] = []  # (command, detail) in the order the scheduler sent them
        self.gates: dict[str, asyncio.Event] = {}  # prompt text -> opened to let that generation finish
        self.started: dict[str, asyncio.Event] = {}  # prompt text -> set when its generation begins
        self.load_errors: list[RkError] = []  # raised by the next loads, in turn
        self.not_begun: set[str] = set()  # prompts whose first run dies before it begins
        self.cancelled: list[int] = []
        self.received: list[GenSpec] = []  # every generation's spec, as the scheduler sent it
        self.contexts: list[int] = []  # the context of each load, in order
        self.embedding = asyncio.Event()  # set when an embedding slice is running
        self.embed_gate: asyncio.Event | None = None  # when set, slices wait for it
        self._seq = 0
        self._specs: dict[int, GenSpec] = {}
        self._running: dict[int, str] = {}  # seq -> prompt of generations under way

    @property
    def pid(self) -> int | None:
        return 4242 + self.restarts if self.process.alive else None

    def gate(self, prompt: str) -> asyncio.Event:
        """Hold the generation of `prompt` until the returned event is set."""
        self.started.setdefault(prompt, asyncio.Event())
        return self.gates.setdefault(prompt, asyncio.Event())

    async def start(self) -> None:
        if not self.process.alive:
            self.process = FakeProcess()
            self.restarts += 1

    async def load(self, manifest: Manifest, num_ctx: int, safe: bool = False) -> wire.Loaded:
        await self.start()
        self.log.append(("load", manifest.name))
        self.contexts.append(num_ctx)
        if self.load_errors:
            raise self.load_errors.pop(0)
        return wire.Loaded(0, 5.0, 100.0)

    async def unload(self, model: str) -> None:
        self.log.append(("unload", model))

    def _call(self, spec: GenSpec | None) -> Call:
        self._seq += 1
        call = Call(self._seq, self.process)
        self.process.pending[call.seq] = call
        if spec is not None:
            self._specs[call.seq] = spec
            self.received.append(spec)
        return call

    async def generate(self, model: str, spec: GenSpec) -> Call:
        await self.start()
        self.log.append(("generate", _prompt(spec)))
        return self._call(spec)

    def generate_ahead(self, model: str, spec: GenSpec) -> Call | None:
        self.log.append(("ahead", _prompt(spec)))
        return self._call(spec)

    async def events(self, call: Call) -> AsyncIterator[wire.Progress | wire.Finished]:
        spec = self._specs.pop(call.seq)
        prompt = _prompt(spec)
        self.log.append(("run", prompt))
        self._running[call.seq] = prompt
        try:
            if prompt in self.not_begun:
                self.not_begun.discard(prompt)
                self.process.alive = False
                raise NotBegun("killed by signal 9")
            if prompt in self.started:
                self.started[prompt].set()
            yield wire.Progress(call.seq, events.Prefill(1.0, 3, 2))
            gate = self.gates.get(prompt)
            for word in prompt.split():
                if call.cancelled_at is not None:
                    raise RkError("cancelled", "cancelled")
                yield wire.Progress(call.seq, events.Token(word + " "))
                if gate is not None:
                    await gate.wait()
            if call.cancelled_at is not None:
                raise RkError("cancelled", "cancelled")
            n = len(prompt.split())
            yield wire.Finished(call.seq, GenResult(prefill_ms=1.0, prefill_tokens=3, cached_tokens=2,
                                                    generate_ms=2.0, generate_tokens=n, memory_mb=100.0))
        finally:
            self.process.pending.pop(call.seq, None)
            self._running.pop(call.seq, None)

    async def embed(self, model: str, texts: tuple[str, ...], truncate: bool) -> Call:
        await self.start()
        self.log.append(("embed", texts))
        return self._call(None)

    async def vectors(self, call: Call) -> wire.Vectors:
        self.embedding.set()
        if self.embed_gate is not None:
            await self.embed_gate.wait()
        self.process.pending.pop(call.seq, None)
        texts = next(d for c, d in reversed(self.log) if c == "embed")
        m = np.zeros((len(texts), 4), dtype=np.float32)
        m[:, 0] = 1.0
        return wire.Vectors.of(call.seq, m, [len(t.split()) for t in texts])

    def cancel(self, call: Call | None) -> None:
        if call is not None and call.live:
            call.cancelled_at = 0.0
            self.cancelled.append(call.seq)
            gate = self.gates.get(self._running.get(call.seq, ""))
            if gate is not None:
                gate.set()  # a held generation notices the cancel at its next token

    def discard(self, call: Call) -> None:
        self.log.append(("discard", call.seq))
        self.process.pending.pop(call.seq, None)
        self._specs.pop(call.seq, None)

    def rss_mb(self) -> float:
        return 100.0

    async def stop(self) -> None:
        self.process.alive = False

    async def kill(self) -> None:
        self.process.alive = False


def _prompt(spec: GenSpec) -> str:
    return spec.messages[-1].content if spec.messages else spec.prompt or ""
