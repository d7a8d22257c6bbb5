"""Typed events a job emits, from arrival to its single final event (`Done` or `Failed`).

They are the one event language of rk: output parsers produce `Token`, `Thinking` and `ToolCalled`,
the runner's wire carries those and `Prefill` as they are (`runner.wire.Progress`), the scheduler
passes them on, and each API family renders them. Only runner control messages (`Begun`, `Loaded`…)
are the runner's own."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from rk.daemon.errors import RkError
from rk.daemon.jobs import JobStats, ToolCall


@dataclass(frozen=True)
class Queued:
    position: int  # jobs ahead of this one (the running one included) + 1


@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class Loading:
    model: str


@dataclass(frozen=True)
class Prefill:
    ms: float
    tokens: int  # computed in this run
    cached: int = 0  # served from the KV cache of an earlier run


@dataclass(frozen=True)
class Prefilling:
    """How far a long prompt's prefill has come: the job is alive (the runner's stall watchdog and an agent's
    idle timer see it), and `rk chat`/`rk top` can show it."""

    done: int  # prompt tokens evaluated so far in this run
    total: int  # prompt tokens this run evaluates


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Thinking:
    text: str  # reasoning, streamed apart from the answer


@dataclass(frozen=True)
class ToolCalled:
    call: ToolCall  # one whole call, as soon as it is complete


@dataclass(frozen=True)
class Vectors:
    index: int  # position of the first vector in the job's input
    embeddings: np.ndarray  # float32, shape (n, dim), rows L2-normalised
    tokens: int


@dataclass(frozen=True)
class Done:
    stats: JobStats


@dataclass(frozen=True)
class Failed:
    error: RkError


Event = Union[Queued, Started, Loading, Prefilling, Prefill, Token, Thinking, ToolCalled, Vectors, Done, Failed]
Step = Union[Prefilling, Prefill, Token, Thinking, ToolCalled]  # what a generation produces before it finishes
Piece = Union[Token, Thinking, ToolCalled]  # what an output parser makes of the model's text
FINAL = (Done, Failed)
