"""What an output parser produces, the interface every parser implements, and the helpers they share.

A model's decoded text arrives one token delta at a time. A parser turns it into the job events it
stands for — answer text (`Token`), reasoning (`Thinking`), tool calls (`ToolCalled`) — as early
as it safely can: text flows on at once and only what could be the start of a marker is held back,
so a reply on a tools request streams as fast as one without.
"""
from __future__ import annotations

import json
import secrets
import string
from typing import Any, Iterable, Protocol

from rk.daemon.events import Piece, Thinking, Token
from rk.daemon.jobs import ToolCall


class OutputParser(Protocol):
    """Turns a stream of decoded text into pieces. One instance per generation."""

    # True when the generation finished inside a reasoning block (no closing marker ever came: the
    # RKLLM 1.3.0 quirk). Meaningful after `finish()`; the answer is then missing, not empty.
    ended_in_thinking: bool
    # Every marker this parser looks for. A backend must decode these literally, even where they are
    # special tokens (`<|python_tag|>`, `[TOOL_CALLS]`, `[THINK]`), or the parser never sees them.
    markers: tuple[str, ...]

    def feed(self, text: str) -> list[Piece]:
        """Take one decoded token delta; return the pieces that are now certain."""
        ...

    def finish(self) -> list[Piece]:
        """End of generation: flush everything still held back."""
        ...


class PlainParser:
    """Identity: every delta is answer text (no tools, no thinking)."""

    ended_in_thinking = False
    markers: tuple[str, ...] = ()

    def feed(self, text: str) -> list[Piece]:
        return [Token(text)] if text else []

    def finish(self) -> list[Piece]:
        return []


def held_suffix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest end of `text` that is a proper start of one of `markers`.

    This is the only text a parser may hold back while waiting for the next delta: anything before it
    cannot become part of a marker, whatever arrives next.
    """
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


def split_at_marker(text: str, markers: Iterable[str]) -> tuple[str, str | None, str]:
    """Split `text` at the first complete marker: (before, marker, after).

    Without a complete marker: (safe, None, held), where `held` is the possible start of a marker that
    must wait for more text and `safe` can go out now.
    """
    markers = tuple(markers)
    first, found = -1, None
    for m in markers:
        i = text.find(m)
        if i >= 0 and (first < 0 or i < first or (i == first and len(m) > len(found or ""))):
            first, found = i, m
    if found is not None:
        return text[:first], found, text[first + len(found):]
    n = held_suffix(text, markers)
    return text[: len(text) - n], None, text[len(text) - n:]


class LeadingSpace:
    """Whitespace at the start of a section, decided once the first other character shows.

    `hold` (start of a reply): kept if answer text follows, dropped if one of `markers` follows.
    `drop` (after a closing marker, e.g. the blank line after `</think>`): always dropped.
    """

    def __init__(self, mode: str | None = None, markers: tuple[str, ...] = (), chars: str | None = None) -> None:
        self.mode = mode
        self._markers = markers
        self._chars = chars

    def settle(self, buf: str) -> str | None:
        """The buffer to go on with, or None to wait for more text (the caller keeps `buf`)."""
        if self.mode is None:
            return buf
        rest = buf.lstrip(self._chars)
        if not rest:
            return None
        if self.mode == "hold":
            if any(m.startswith(rest) and m != rest for m in self._markers):
                return None
            if not any(rest.startswith(m) for m in self._markers):
                rest = buf
        self.mode = None
        return rest

    def flush(self, buf: str) -> str:
        """What is left of a held buffer at the end of generation."""
        return "" if self.mode == "drop" and not buf.strip(self._chars) else buf


_ID_CHARS = string.ascii_lowercase + string.digits


class CallMaker:
    """Builds ToolCalls from decoded JSON, each with an id unique within the reply (`call_` + 8 chars)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def new_id(self) -> str:
        while True:
            cid = "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))
            if cid not in self._ids:
                self._ids.add(cid)
                return cid

    def from_json(self, text: str, *, need_arguments: bool = False) -> ToolCall | None:
        """A call from `{"name": ..., "arguments"|"parameters": {...}}` text, or None if it is not one."""
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        return self.from_object(obj, need_arguments=need_arguments)

    def from_object(self, obj: Any, *, need_arguments: bool = False) -> ToolCall | None:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
            return None
        key = "arguments" if "arguments" in obj else "parameters" if "parameters" in obj else None
        if key is None and need_arguments:
            return None
        args = arguments_object(obj.get(key, {}) if key else {})
        if args is None:
            return None
        return ToolCall(name=obj["name"].strip(), arguments=args, id=self.new_id())

    def named(self, name: str, args_text: str) -> ToolCall | None:
        """A call whose name and JSON arguments arrived separately (Mistral's `name[ARGS]{...}`)."""
        try:
            args = arguments_object(json.loads(args_text))
        except ValueError:
            return None
        if args is None or not name or any(c.isspace() for c in name):
            return None
        return ToolCall(name=name, arguments=args, id=self.new_id())


def arguments_object(value: Any) -> dict[str, Any] | None:
    """Arguments as an object; some models send them as a JSON string, which is decoded once."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


class JsonEnd:
    """Finds where the JSON object or array starting at `start` of a growing text ends.

    Each character is scanned once across calls, so a long argument object streamed one byte per token
    costs linear time.
    """

    def __init__(self, start: int = 0) -> None:
        self._pos = start
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def find(self, text: str) -> int:
        """Index just past the closing bracket, or -1 while the value is incomplete."""
        i = self._pos
        n = len(text)
        while i < n:
            c = text[i]
            i += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self._pos = i
                    return i
        self._pos = i
        return -1


def coalesce(pieces: Iterable[Piece]) -> list[Piece]:
    """Adjacent Token (or Thinking) pieces joined into one: the same reply however it was chunked."""
    out: list[Piece] = []
    for p in pieces:
        if out and type(p) is type(out[-1]) and isinstance(p, (Token, Thinking)):
            out[-1] = type(p)(out[-1].text + p.text)
        elif not isinstance(p, (Token, Thinking)) or p.text:
            out.append(p)
    return out
