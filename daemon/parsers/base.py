"""What an output parser produces, its interface, and the hold-back rule every streaming filter shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Union

from rk.daemon.jobs import ToolCall


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Thinking:
    text: str


@dataclass(frozen=True)
class Call:
    call: ToolCall


Piece = Union[Text, Thinking, Call]


class OutputParser(Protocol):
    def feed(self, text: str) -> list[Piece]:
        """Pieces for one decoded delta: text flows out at once, only a possible marker start is held."""

    def finish(self) -> list[Piece]:
        """End of generation: flush whatever is held."""


class Plain:
    """Models with no markers in their output: every delta is text."""

    def feed(self, text: str) -> list[Piece]:
        return [Text(text)] if text else []

    def finish(self) -> list[Piece]:
        return []


def held_suffix(buf: str, prefixes: frozenset[str], longest: int) -> int:
    """Length of the longest suffix of `buf` that is in `prefixes` (the proper prefixes of some markers).

    Costs at most `longest` set lookups however many markers there are.
    """
    for n in range(min(longest, len(buf)), 0, -1):
        if buf[-n:] in prefixes:
            return n
    return 0


def proper_prefixes(markers: Iterable[str]) -> frozenset[str]:
    return frozenset(m[:i] for m in markers for i in range(1, len(m)))
