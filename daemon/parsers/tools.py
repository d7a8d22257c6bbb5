"""Tool-call dialects: Hermes/Qwen `<tool_call>` blocks, Llama 3.x JSON, Mistral `[TOOL_CALLS]`.

Each parser passes answer text straight through and holds back only a possible marker start; a call's
text is held until it is complete, then comes out as one `Call`. A block that does not decode to a
call comes out as the text the model wrote, so nothing is lost and nothing raises.
"""
from __future__ import annotations

import json

from rk.daemon.events import Piece, Token, ToolCalled
from rk.daemon.jobs import ToolCall
from rk.daemon.parsers.base import CallMaker, JsonEnd, LeadingSpace, split_at_marker

_AFTER_CALL = " \t\r\n"


class ToolParser:
    """The feed/finish loop the dialects share: `_step` consumes the buffer until it must wait."""

    openers: tuple[str, ...] = ()  # markers that start a call: they also end a reasoning block
    markers: tuple[str, ...] = ()
    ended_in_thinking = False

    def __init__(self) -> None:
        self._calls = CallMaker()
        self._buf = ""
        self._lead = LeadingSpace("hold", self.openers)

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._step(out):  # each step returns False once it must wait for more text
            pass
        return out

    @property
    def in_call(self) -> bool:
        """Inside a call's text: what comes next is arguments, not answer (an outer parser must not
        look for its own markers there)."""
        raise NotImplementedError

    def _step(self, out: list[Piece]) -> bool:
        raise NotImplementedError


class HermesParser(ToolParser):
    """`<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, one block per call (Qwen2.5, Qwen3,
    Hermes, RKLLM's function calling). An unclosed block ends at the next opening marker or at the
    end of generation."""

    OPEN, CLOSE = "<tool_call>", "</tool_call>"
    openers, markers = (OPEN,), (OPEN, CLOSE)

    def __init__(self) -> None:
        super().__init__()
        self._in_call = False
        self._body = ""

    @property
    def in_call(self) -> bool:
        return self._in_call

    def _step(self, out: list[Piece]) -> bool:
        if self._in_call:
            safe, marker, self._buf = split_at_marker(self._buf, (self.CLOSE, self.OPEN))
            self._body += safe
            if marker is None:
                return False
            body, self._body = self._body, ""
            call = self._calls.from_json(body.strip())
            if marker == self.OPEN and call is None:
                # Inside the arguments (a string that mentions the marker), not a new block.
                self._body = body + marker
                return True
            out.append(ToolCalled(call) if call else Token(self.OPEN + body + self.CLOSE))
            if marker == self.CLOSE:
                # The line break between calls is not answer text; after a failed block it is.
                self._in_call, self._lead = False, LeadingSpace("drop" if call else None)
            return True
        buf = self._lead.settle(self._buf)
        if buf is None:
            return False
        before, marker, self._buf = split_at_marker(buf, (self.OPEN, self.CLOSE))
        if before:
            out.append(Token(before))
        if marker == self.OPEN:
            self._in_call = True
        elif marker == self.CLOSE:  # a stray closing marker is never shown as text
            self._lead = LeadingSpace("drop")
        return marker is not None

    def finish(self) -> list[Piece]:
        if self._in_call:
            body, self._body, self._buf, self._in_call = self._body + self._buf, "", "", False
            call = self._calls.from_json(body.strip())
            return [ToolCalled(call) if call else Token(self.OPEN + body)]
        rest, self._buf = self._lead.flush(self._buf), ""
        return [Token(rest)] if rest else []


class Llama3Parser(ToolParser):
    """Llama 3.1+: `<|python_tag|>{json}` or a reply that is a bare JSON object with `name` and
    `parameters` (or `arguments`). Several calls may follow each other, separated by `;` or spaces.
    Bare JSON counts only at the start of the reply: a JSON object in the middle of prose is text."""

    TAG = "<|python_tag|>"
    openers = markers = (TAG,)

    def __init__(self) -> None:
        super().__init__()
        self._json_ok = True  # a bare JSON object here would be a call
        self._in_json = False
        self._prefix = ""  # what precedes the candidate: given back as text if it is not a call
        self._block = ""
        self._end: JsonEnd | None = None

    @property
    def in_call(self) -> bool:
        return self._in_json

    def _step(self, out: list[Piece]) -> bool:
        if self._in_json:
            return self._step_json(out)
        buf = self._lead.settle(self._buf)
        if buf is None:
            return False
        if self._json_ok:
            self._json_ok = False
            body = buf.lstrip()
            if body.startswith("{"):
                self._open_json(buf[: len(buf) - len(body)], body)
                return True
        before, marker, self._buf = split_at_marker(buf, (self.TAG,))
        if before:
            out.append(Token(before))
        if marker is None:
            return False
        self._open_json(marker, self._buf)
        return True

    def _open_json(self, prefix: str, text: str) -> None:
        self._in_json, self._prefix, self._block, self._buf, self._end = True, prefix, text, "", None

    def _step_json(self, out: list[Piece]) -> bool:
        self._block += self._buf
        self._buf = ""
        if self._end is None:
            body = self._block.lstrip()
            if not body:
                return False
            self._prefix += self._block[: len(self._block) - len(body)]
            self._block = body
            if not body.startswith("{"):  # e.g. a built-in tool's Python call: shown as written
                out.append(Token(self._prefix + self._block))
                self._in_json, self._lead = False, LeadingSpace()
                return False
            self._end = JsonEnd()
        end = self._end.find(self._block)
        if end < 0:
            return False
        obj, self._buf = self._block[:end], self._block[end:]
        self._in_json = False
        call = self._calls.from_json(obj, need_arguments=True)
        if call:
            out.append(ToolCalled(call))
            self._json_ok, self._lead = True, LeadingSpace("drop", chars=_AFTER_CALL + ";")
        else:
            out.append(Token(self._prefix + obj))
            self._lead = LeadingSpace()
        return True

    def finish(self) -> list[Piece]:
        if self._in_json:
            rest, self._in_json = self._prefix + self._block + self._buf, False
        else:
            rest = self._lead.flush(self._buf)
        self._buf = ""
        return [Token(rest)] if rest else []


class MistralParser(ToolParser):
    """Mistral: `[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]` (v0.3, Nemo) and the newer
    `[TOOL_CALLS]name[ARGS]{…}` (Ministral 3, Magistral), optionally `name[CALL_ID]id[ARGS]{…}`
    (Mistral Small 3.2); the model's own ids are replaced by fresh unique ones."""

    TAG, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
    openers, markers = (TAG,), (TAG, ARGS, CALL_ID)

    def __init__(self) -> None:
        super().__init__()
        self._in_calls = False
        self._block = ""  # everything after the marker, kept whole in case it is not a call
        self._mode: str | None = None  # "array" | "name" | "args"
        self._at = 0
        self._name = ""
        self._end: JsonEnd | None = None

    @property
    def in_call(self) -> bool:
        return self._in_calls

    def _step(self, out: list[Piece]) -> bool:
        if self._in_calls:
            self._block += self._buf
            self._buf = ""
            return self._step_calls(out)
        buf = self._lead.settle(self._buf)
        if buf is None:
            return False
        before, marker, self._buf = split_at_marker(buf, (self.TAG,))
        if before:
            out.append(Token(before))
        if marker is None:
            return False
        self._in_calls, self._block, self._mode, self._at, self._end = True, "", None, 0, None
        return True

    def _step_calls(self, out: list[Piece]) -> bool:
        b = self._block
        if self._mode is None:
            body = b.lstrip()
            if not body:
                return False
            self._at = len(b) - len(body)
            self._mode = "array" if body.startswith("[") else "name"
            if self._mode == "array":
                self._end = JsonEnd(self._at)
        if self._mode == "name":
            j = b.find(self.ARGS, self._at)
            if j < 0:
                # A function name has no spaces: prose after the marker is not a call, stop holding it.
                return self._fail(out, len(b)) if any(c.isspace() for c in b[self._at:]) else False
            self._name = b[self._at:j].split(self.CALL_ID)[0].strip()
            self._mode, self._at = "args", j + len(self.ARGS)
        if self._mode == "args" and self._end is None:
            body = b[self._at:].lstrip()
            if not body:
                return False
            if not body.startswith("{"):
                return self._fail(out, len(b))
            self._at = len(b) - len(body)
            self._end = JsonEnd(self._at)
        assert self._end is not None
        end = self._end.find(b)
        if end < 0:
            return False
        calls = self._decode(b[self._at:end])
        if calls is None:
            return self._fail(out, end)
        out += [ToolCalled(c) for c in calls]
        self._in_calls, self._buf, self._lead = False, b[end:], LeadingSpace("drop", chars=_AFTER_CALL)
        return True

    def _decode(self, text: str) -> list[ToolCall] | None:
        if self._mode == "args":
            call = self._calls.named(self._name, text)
            return [call] if call else None
        try:
            items = json.loads(text)
        except ValueError:
            return None
        if not isinstance(items, list) or not items:
            return None
        calls = [self._calls.from_object(i) for i in items]
        return None if any(c is None for c in calls) else [c for c in calls if c is not None]

    def _fail(self, out: list[Piece], upto: int) -> bool:
        """Give the block back as the text it was; what follows it is answer text again."""
        out.append(Token(self.TAG + self._block[:upto]))
        self._in_calls, self._buf, self._lead = False, self._block[upto:], LeadingSpace()
        return True

    def finish(self) -> list[Piece]:
        rest = self.TAG + self._block + self._buf if self._in_calls else self._lead.flush(self._buf)
        self._in_calls, self._buf = False, ""
        return [Token(rest)] if rest else []
