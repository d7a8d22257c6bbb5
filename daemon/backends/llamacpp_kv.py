"""Saved KV states of recent prompts, so conversations interleaved on the queue do not evict each other.

llama.cpp's context holds one sequence: the last prompt and its reply. A job that continues that
conversation reuses its common prefix in place. A job of another conversation would overwrite it, so
the backend first saves the old sequence here (llama.cpp's per-sequence state, KV only, no logits);
when that conversation comes back, its state is restored and only the new turn is prefilled.
The store is bounded by entries and bytes, least recently used out first.
"""
from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from rk.daemon.backends.base import reusable_prefix


@dataclass(frozen=True)
class SavedState:
    tokens: tuple[int, ...]
    media: tuple[str, ...]  # digests of the images its prompt carried
    blob: bytes


class PrefixStates:
    """At most `capacity` states and `max_bytes` bytes, most recently used last."""

    def __init__(self, capacity: int = 4, max_bytes: int = 256 * 2**20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._states: OrderedDict[tuple[tuple[str, ...], tuple[int, ...]], SavedState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return sum(len(s.blob) for s in self._states.values())

    def best(self, ids: Sequence[int], media: tuple[str, ...]) -> tuple[SavedState | None, int]:
        """The saved state that can serve the longest prefix of `ids` with the images `media`, and that
        length (0 and None if none)."""
        found, length = None, 0
        for s in self._states.values():
            n = reusable_prefix(s.tokens, s.media, ids, media)
            if n > length:
                found, length = s, n
        if found is not None:
            self._states.move_to_end((found.media, found.tokens))
        return found, length

    def put(self, tokens: Sequence[int], media: tuple[str, ...], blob: bytes) -> None:
        """Keep a state; states with the same images that are a prefix of it are dropped (it serves them
        all), then the oldest go until it fits. A state larger than the whole budget is not kept."""
        if self.capacity <= 0 or len(blob) > self.max_bytes:
            return
        key = tuple(tokens)
        for old in [k for k in self._states if k[0] == media and len(k[1]) <= len(key) and key[:len(k[1])] == k[1]]:
            del self._states[old]
        self._states[(media, key)] = SavedState(key, media, blob)
        while len(self._states) > self.capacity or self.nbytes > self.max_bytes:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()


def save_sequence(ctx: Any, seq: int = 0) -> bytes:
    """The KV state of one sequence of a llama.cpp context, as bytes."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(ctx, seq)
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq)
    return bytes(buf[:n]) if n < size else bytes(buf)


def restore_sequence(ctx: Any, blob: bytes, seq: int = 0) -> bool:
    """Replace one sequence's KV with a saved state; False if llama.cpp refused it (the sequence is then empty)."""
    import llama_cpp

    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq, -1, -1)
    buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
    return llama_cpp.llama_state_seq_set_data(ctx, buf, len(blob), seq) == len(blob)
