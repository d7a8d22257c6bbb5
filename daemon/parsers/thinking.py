"""Reasoning blocks: `<think>…</think>` (Qwen3, DeepSeek-R1, SmolLM3) or `[THINK]…[/THINK]` (Magistral).

The text outside the block is answer text, passed on to an inner tool-call parser when the request
has tools. Whitespace right inside the block and the blank line after it are dropped, as Ollama does.
"""
from __future__ import annotations

from rk.daemon.events import Piece, Thinking, Token
from rk.daemon.parsers.base import LeadingSpace, split_at_marker
from rk.daemon.parsers.tools import ToolParser


class ThinkingParser:
    """Splits reasoning from the answer.

    `start_in_thinking`: the chat template already opened the block in the prompt, so the output
    starts with reasoning and only the closing marker arrives. A call marker of the `inner` parser
    (e.g. `<tool_call>`) also ends the reasoning, for models that call a tool without closing it.
    If the generation ends inside the block, `ended_in_thinking` is set by `finish()`.
    """

    def __init__(self, inner: ToolParser | None = None, *, start_in_thinking: bool = False,
                 open_tag: str = "<think>", close_tag: str = "</think>") -> None:
        self._inner = inner
        self._open, self._close = open_tag, close_tag
        self._interrupts = inner.openers if inner is not None else ()
        self._thinking = start_in_thinking
        self._buf = ""
        # A block the template opened may still start with its own opening marker; it is dropped.
        self._lead = LeadingSpace("drop") if start_in_thinking else LeadingSpace("hold", (open_tag,))
        self._strip_open = start_in_thinking
        self.ended_in_thinking = False
        self.markers = (open_tag, close_tag, *(inner.markers if inner is not None else ()))

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._buf:
            if not (self._step_thinking(out) if self._thinking else self._step_answer(out)):
                break
        return out

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        rest, self._buf = self._lead.flush(self._buf), ""
        if self._thinking:
            self.ended_in_thinking = True
            if rest.strip():
                out.append(Thinking(rest.rstrip()))
        elif rest:
            out += self._answer(rest)
        if self._inner is not None:
            out += self._inner.finish()
        return out

    def _step_thinking(self, out: list[Piece]) -> bool:
        buf = self._lead.settle(self._buf)
        if buf is None:
            return False
        if self._strip_open:
            if self._open.startswith(buf) and buf != self._open:
                self._buf = buf
                return False
            self._strip_open = False
            if buf.startswith(self._open):
                self._buf, self._lead = buf[len(self._open):], LeadingSpace("drop")
                return True
        before, marker, rest = split_at_marker(buf, (self._close, *self._interrupts))
        if marker is None:
            # Trailing whitespace may be the line before the closing marker: hold it too.
            keep = before.rstrip()
            if keep:
                out.append(Thinking(keep))
            self._buf = before[len(keep):] + rest
            return False
        if before.strip():
            out.append(Thinking(before.rstrip()))
        self._thinking = False
        if marker == self._close:
            self._buf, self._lead = rest, LeadingSpace("drop")
        else:
            self._buf, self._lead = marker + rest, LeadingSpace()
        return True

    def _step_answer(self, out: list[Piece]) -> bool:
        buf = self._lead.settle(self._buf)
        if buf is None:
            return False
        before, marker, rest = split_at_marker(buf, (self._open, self._close))
        if before:
            out += self._answer(before)
        self._buf = rest
        if marker is None:
            return False
        if self._inner is not None and self._inner.in_call:
            out += self._inner.feed(marker)  # the marker is inside a call's arguments
        elif marker == self._open:
            self._thinking, self._lead = True, LeadingSpace("drop")
        else:
            # A closing marker with no block open: reasoning the template opened without saying so.
            self._lead = LeadingSpace("drop")
        return True

    def _answer(self, text: str) -> list[Piece]:
        return self._inner.feed(text) if self._inner is not None else [Token(text)]
