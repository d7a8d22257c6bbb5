"""Streaming text helpers shared by every backend: stop strings that may span token boundaries, and
token bytes that may end inside a UTF-8 character."""
from __future__ import annotations

import codecs
import threading

from rk.daemon.backends.base import Sink


class StopFilter:
    """Passes text on, holding back only what could be the start of a stop string.

    When a stop string appears, the text before it is sent, `stop` is set and `hit` records it.
    """

    def __init__(self, sink: Sink, stops: tuple[str, ...], stop: threading.Event) -> None:
        self._sink = sink
        self._stops = tuple(s for s in stops if s)
        self._stop = stop
        self._held = ""
        self.hit = False

    def prefill(self, ms: float, tokens: int) -> None:
        self._sink.prefill(ms, tokens)

    def token(self, text: str) -> None:
        if self.hit:
            return
        if not self._stops:
            if text:
                self._sink.token(text)
            return
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            if cut:
                self._sink.token(buf[:cut])
            self._held, self.hit = "", True
            self._stop.set()
            return
        keep = max((len(s) - 1 for s in self._stops), default=0)
        # hold back the longest suffix that is a prefix of some stop string
        hold = 0
        for n in range(min(keep, len(buf)), 0, -1):
            if any(s.startswith(buf[-n:]) for s in self._stops):
                hold = n
                break
        out, self._held = buf[: len(buf) - hold], buf[len(buf) - hold:]
        if out:
            self._sink.token(out)

    def flush(self) -> None:
        """Send held text at the end of a generation that no stop string ended."""
        if self._held and not self.hit:
            self._sink.token(self._held)
        self._held = ""


class Utf8Stream:
    """Token bytes in, whole characters out: a character split over two tokens waits for the second."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._dec.decode(data)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
