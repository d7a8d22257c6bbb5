"""The runner's wire: every command the daemon sends and every event the runner answers, as frozen
dataclasses with ONE codec (a length-prefixed MessagePack frame each, tagged by `t`).

msgspec turns the typed values into MessagePack and back (nested dataclasses, tuples), so neither side
builds or reads a dict by hand and a new event kind cannot be mistaken for another. MessagePack carries
bytes as they are: an image's pixels and a batch of vectors cross the pipe without base64.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import msgspec
import numpy as np

from rk.daemon import events
from rk.daemon.backends.base import RunnerConfig
from rk.daemon.events import Step
from rk.daemon.jobs import GenResult, GenSpec
from rk.daemon.store.models import Manifest

# ---- commands (daemon -> runner) ---------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    seq: int
    manifest: Manifest
    num_ctx: int  # the context to load with, decided by the daemon (daemon/context.py)
    safe: bool = False  # with `RunnerConfig.safe()`: a reload after the model crashed the engine


@dataclass(frozen=True)
class Unload:
    seq: int
    model: str


@dataclass(frozen=True)
class Generate:
    seq: int
    model: str
    spec: GenSpec


@dataclass(frozen=True)
class Embed:
    seq: int
    model: str
    texts: tuple[str, ...]
    truncate: bool = True


@dataclass(frozen=True)
class Cancel:
    seq: int  # the command to abort (running) or skip (still queued in the runner)


Command = Union[Load, Unload, Generate, Embed, Cancel]

# ---- events (runner -> daemon) -----------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Begun:
    """The runner has taken this command off its queue: from now on a crash may have been caused by it."""

    seq: int


@dataclass(frozen=True)
class Loaded:
    seq: int
    ms: float
    memory_mb: float
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own facts, e.g. CPU threads


@dataclass(frozen=True)
class Unloaded:
    seq: int


@dataclass(frozen=True)
class Progress:
    """A job event the runner produced for command `seq` (prefill figures, answer text, reasoning, a tool
    call): the job's own event types, carried as they are, so nothing is renamed on the way."""

    seq: int
    event: Step


@dataclass(frozen=True)
class Finished:
    seq: int
    result: GenResult


@dataclass(frozen=True)
class Vectors:
    seq: int
    shape: tuple[int, int]
    data: bytes  # little-endian float32, rows L2-normalised
    tokens: tuple[int, ...]  # per text

    @classmethod
    def of(cls, seq: int, matrix: np.ndarray, tokens: list[int]) -> Vectors:
        m = np.ascontiguousarray(matrix, dtype="<f4")
        return cls(seq, (int(m.shape[0]), int(m.shape[1])), m.tobytes(), tuple(tokens))

    def matrix(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype="<f4").reshape(self.shape)


@dataclass(frozen=True)
class Error:
    seq: int
    code: str
    message: str


Event = Union[Ready, Begun, Loaded, Unloaded, Progress, Finished, Vectors, Error]

# ---- the codec ---------------------------------------------------------------------------------

_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Load, Unload, Generate, Embed, Cancel, Ready, Begun, Loaded,
                                                          Unloaded, Finished, Vectors, Error)}
_STEPS: dict[str, type] = {cls.__name__: cls for cls in (events.Prefilling, events.Prefill, events.Token, events.Thinking,
                                                          events.ToolCalled)}


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is Path:
        return Path(obj)
    raise NotImplementedError(f"cannot decode {kind}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_HEAD = struct.Struct(">I")  # the frame's length, before its MessagePack body


def encode(msg: Command | Event) -> bytes:
    """One message as a frame: its length, then MessagePack of `{"t": "<Type>", "v": {...}}`; a job event
    also names its command, `{"t": "Token", "s": seq, "v": {...}}`."""
    if isinstance(msg, Progress):
        body = _encoder.encode({"t": type(msg.event).__name__, "s": msg.seq, "v": msg.event})
    else:
        body = _encoder.encode({"t": type(msg).__name__, "v": msg})
    return _HEAD.pack(len(body)) + body


def decode(body: bytes) -> Any:
    """The typed message of one frame's body; a body that is not one raises `ValueError`."""
    try:
        raw = msgspec.msgpack.decode(body)
        if "s" in raw:
            return Progress(raw["s"], msgspec.convert(raw["v"], _STEPS[raw["t"]], dec_hook=_dec_hook))
        return msgspec.convert(raw["v"], _TYPES[raw["t"]], dec_hook=_dec_hook)
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as e:
        raise ValueError(f"bad runner message: {e}") from None


async def read_frame(stream: asyncio.StreamReader) -> bytes | None:
    """The body of the next frame; None at the end of the stream."""
    try:
        (n,) = _HEAD.unpack(await stream.readexactly(_HEAD.size))
        return await stream.readexactly(n)
    except asyncio.IncompleteReadError:
        return None


def read_frame_sync(stream: BinaryIO) -> bytes | None:
    """The body of the next frame from a blocking stream; None at its end."""
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    (n,) = _HEAD.unpack(head)
    body = stream.read(n)
    return body if len(body) == n else None


def encode_config(config: RunnerConfig) -> str:
    """The runner's settings as its one command-line argument (JSON)."""
    return msgspec.json.encode(config, enc_hook=_enc_hook).decode()


def decode_config(arg: str) -> RunnerConfig:
    return msgspec.json.decode(arg, type=RunnerConfig)
