"""Typed events a job emits, from arrival to its single final event (`Done` or `Failed`)."""
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
    tokens: int


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class ThinkingText:
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


Event = Union[Queued, Started, Loading, Prefill, Token, ThinkingText, ToolCalled, Vectors, Done, Failed]
FINAL = (Done, Failed)
