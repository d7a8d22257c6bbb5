"""The per-token path inside the runner: backend text -> stop strings -> the model family's parser -> events.

Everything streams: text is passed on the moment it arrives, and only what could be the beginning of
a stop string or a parser's marker is held back (never a fixed-size buffer).
"""
from __future__ import annotations

import re
import threading
from typing import Callable

from rk.daemon.events import Piece, Prefill, Prefilling, Thinking, Token, ToolCalled
from rk.daemon.jobs import Format, GenSpec
from rk.daemon.parsers import OutputParser, PlainParser, parser_for
from rk.daemon.runner import wire
from rk.daemon.store.models import Manifest
from rk.daemon.structured import validate


def _longest_held(buf: str, prefixes: frozenset[str], longest: int) -> int:
    """Length of the longest end of `buf` in `prefixes`: at most `longest` set lookups, whatever their number."""
    for n in range(min(longest, len(buf)), 0, -1):
        if buf[-n:] in prefixes:
            return n
    return 0


class StopStrings:
    """Cuts the text at the first stop string, which may span token boundaries.

    One compiled pattern finds any stop string and one prefix set decides what to hold back, so the
    cost per token does not grow with the number of stop strings.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        stops = tuple(s for s in stops if s)
        self._pattern = re.compile("|".join(re.escape(s) for s in sorted(stops, key=len, reverse=True))) if stops else None
        self._prefixes = frozenset(s[:i] for s in stops for i in range(1, len(s)))
        self._longest = max((len(s) for s in stops), default=0)
        self._held = ""
        self.hit = False
        self.which: str | None = None  # the stop string that matched

    def feed(self, text: str) -> str:
        """The text that is certainly not part of a stop string; after a hit, nothing."""
        if self.hit or self._pattern is None:
            return "" if self.hit else text
        buf = self._held + text
        m = self._pattern.search(buf)
        pending = len(buf) - _longest_held(buf, self._prefixes, self._longest - 1)  # where an unfinished stop may begin
        if m is not None and m.start() <= pending:
            self._held, self.hit, self.which = "", True, m.group(0)
            return buf[:m.start()]
        self._held = buf[pending:]  # a stop that began earlier than a complete one may still finish
        return buf[:pending]

    def flush(self) -> str:
        """At the end of generation: what was held, cut at a complete stop string inside it."""
        held, self._held = ("" if self.hit else self._held), ""
        m = self._pattern.search(held) if self._pattern is not None else None
        if m is not None:
            self.hit, self.which = True, m.group(0)
            return held[:m.start()]
        return held


def output_parser(manifest: Manifest, template: str | None, spec: GenSpec) -> OutputParser:
    """The model family's parser for this request; a raw prompt is continued as plain text."""
    if spec.raw:
        return PlainParser()
    tools = bool(spec.tools)  # a resolved job offers none under tool_choice "none"
    return parser_for(manifest.family, template or manifest.template, tools=tools, think=spec.think,
                      thinks=manifest.can("thinking"))


class ToolChoice:
    """What `tool_choice` demands of a finished reply: "auto" and "none" nothing, "required" a call, a
    function's name a call to that function and no other.

    Nothing here can force the model (a grammar can, on engines that have one): a call to another
    function is held back, never passed off as the one asked for, and a reply that does not comply
    fails the job with a sentence saying so.
    """

    def __init__(self, spec: GenSpec) -> None:
        self.choice = spec.tool_choice if spec.tools else "auto"
        self.called: list[str] = []
        self.refused: list[str] = []

    def allows(self, name: str) -> bool:
        """Whether a call to `name` may go out (a call refused here is remembered for `problem`)."""
        if self.choice in ("auto", "none", "required") or name == self.choice:
            self.called.append(name)
            return True
        self.refused.append(name)
        return False

    def problem(self) -> str | None:
        """None if the reply honours the choice, else what is wrong with it."""
        if self.choice in ("auto", "none") or (self.called and not self.refused):
            return None
        wanted = "a tool call" if self.choice == "required" else f"a call to {self.choice}"
        got = f"called {', '.join(self.refused)} instead" if self.refused else "answered without one"
        return f"tool_choice asked for {wanted}; the model {got}"


class Pipeline:
    """The Sink a backend writes to for one generation; it emits the command's typed events."""

    def __init__(self, seq: int, send: Callable[[wire.Event], None], spec: GenSpec, stop: threading.Event,
                 parser: OutputParser) -> None:
        self._seq, self._send, self._stop = seq, send, stop
        self._stops = StopStrings(spec.options.stop)
        self._parser = parser
        self._show_thinking = spec.think is not False  # a thinking model asked not to: its reasoning is dropped
        self.tool_choice = ToolChoice(spec)
        self._one_call = not spec.parallel_tool_calls
        self.answered = False  # any answer text or tool call went out
        self._answer: list[str] = []  # kept only when a format asks to check it
        self._keep_answer = spec.format is not None

    @property
    def hit_stop(self) -> bool:
        return self._stops.hit

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the reply, if one did."""
        return self._stops.which

    def prefilling(self, done: int, total: int) -> None:
        self._send(wire.Progress(self._seq, Prefilling(done, total)))

    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None:
        self._send(wire.Progress(self._seq, Prefill(ms, tokens, cached)))

    def token(self, text: str) -> None:
        if self._stops.hit:
            return
        safe = self._stops.feed(text)
        if self._stops.hit:
            self._stop.set()  # the backend ends at its next token
        if safe:
            self._emit(self._parser.feed(safe))

    def finish(self) -> None:
        """End of generation: release held text, then whatever the parser still holds."""
        tail = self._stops.flush()
        self._emit((self._parser.feed(tail) if tail else []) + self._parser.finish())

    def format_problem(self, format: Format) -> str | None:
        """What is wrong with the answer for the requested structured output (a reply of tool calls is not checked)."""
        if format is None or self.tool_choice.called:
            return None
        return validate("".join(self._answer), format)

    @property
    def ended_in_thinking(self) -> bool:
        """The model stopped inside its reasoning and never answered (reported of RKLLM 1.3.0)."""
        return self._parser.ended_in_thinking and not self.answered

    def _emit(self, pieces: list[Piece]) -> None:
        for p in pieces:
            if self._one_call and self.tool_choice.called:
                self._stop.set()  # parallel_tool_calls false: the first call ends the reply
                return
            match p:
                case Token(text=t):
                    self.answered = True
                    if self._keep_answer:
                        self._answer.append(t)
                case Thinking():
                    if not self._show_thinking:
                        continue
                case ToolCalled(call=c):
                    self.answered = True
                    if not self.tool_choice.allows(c.name):
                        continue
            self._send(wire.Progress(self._seq, p))
