"""Stream one chat reply: a live queue line while the job waits, the text as it comes, Ctrl-C to cancel.

Shared by `rk chat` (interactive and piped) and `rk run`. Ctrl-C does not raise in the middle of a
socket read: a SIGINT handler sends `cancel` for the job, and the stream then ends the normal way
(an `error` event with code `cancelled`), so the connection stays usable for the next turn.
"""
from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Iterator

from rk.client import Client, DaemonError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live


@dataclass
class Reply:
    """What one turn produced: the text, and the `done` stats unless it was cancelled."""

    text: str
    stats: dict[str, Any] | None


def stats_line(stats: dict[str, Any]) -> str:
    """The one dim line after a reply: wait, prefill, generation speed, memory."""
    gen_ms, gen_tok = stats.get("generate_ms", 0.0), stats.get("generate_tokens", 0)
    tps = f"{gen_tok / (gen_ms / 1000):.1f} tok/s" if gen_ms else "- tok/s"
    parts = [f"wait {stats.get('wait_ms', 0):.0f} ms"]
    if stats.get("load_ms", 0) >= 1:
        parts.append(f"load {stats['load_ms']:.0f} ms")
    thought = f" ({stats['thinking_tokens']} thinking)" if stats.get("thinking_tokens") else ""
    parts += [f"prefill {stats.get('prefill_ms', 0):.0f} ms ({stats.get('prefill_tokens', 0)} tok)",
              f"generate {gen_tok} tok{thought} at {tps}", f"mem {stats.get('memory_mb', 0):.0f} MB"]
    return " · ".join(parts)


def folded(thinking: str, width: int = 72) -> str:
    """Reasoning folded to one line once the answer starts: its size and how it began."""
    words = " ".join(thinking.split())
    head = words if len(words) <= width else words[:width - 1].rstrip() + "…"
    return f"thought ({len(words.split())} words): {head}"


class ReplyView:
    """Draws one reply on a console: a transient status line while waiting, then the streamed text.

    With `markdown`, the text is re-rendered as rich Markdown as it grows; otherwise it is written
    as plain text. Status lines appear only on a terminal. Reasoning streams dim on a terminal and
    is folded to one line when the answer (or the end) comes; elsewhere it is left out.
    """

    def __init__(self, console: Console, markdown: bool) -> None:
        self.console = console
        self.markdown = markdown
        self.text = ""
        self.thinking = ""
        self.calls: list[dict[str, Any]] = []
        self._status: Live | None = None
        self._body: Live | None = None
        self._thought: Live | None = None

    def think(self, text: str) -> None:
        self.thinking += text
        if not self.console.is_terminal:
            return
        self._stop_status()
        from rich.live import Live
        from rich.text import Text

        shown = Text(self.thinking, style="dim italic")
        if self._thought is None:
            self._thought = Live(shown, console=self.console, transient=True, refresh_per_second=8,
                                 vertical_overflow="crop")
            self._thought.start(refresh=True)
        else:
            self._thought.update(shown, refresh=True)

    def tool_call(self, call: dict[str, Any]) -> None:
        """A call the model made (rk chat offers no tools; shown so it is not silently lost)."""
        self._fold()
        self._stop_status()
        self.calls.append(call)
        self.console.print(f"→ {call.get('name')}({call.get('arguments')})", style="cyan", markup=False, highlight=False)

    def status(self, message: str) -> None:
        if not self.console.is_terminal or self.text:
            return
        from rich.live import Live
        from rich.spinner import Spinner
        from rich.text import Text

        spinner = Spinner("dots", Text(message, style="dim"), style="dim")
        if self._status is None:
            self._status = Live(spinner, console=self.console, transient=True, refresh_per_second=12)
            self._status.start()
        else:
            self._status.update(spinner)

    def token(self, text: str) -> None:
        self._fold()
        self._stop_status()
        self.text += text
        if not self.markdown:
            self.console.file.write(text)
            self.console.file.flush()
            return
        from rich.markdown import Markdown

        if self._body is None:
            from rich.live import Live

            self._body = Live(Markdown(self.text), console=self.console, refresh_per_second=8,
                              vertical_overflow="visible")
            self._body.start()
        else:
            self._body.update(Markdown(self.text))

    def close(self) -> None:
        self._fold()
        self._stop_status()
        if self._body is not None:
            self._body.stop()
        elif self.text and not self.text.endswith("\n"):
            self.console.file.write("\n")
            self.console.file.flush()

    def _fold(self) -> None:
        """End the streamed reasoning: replace it with its one-line summary."""
        if self._thought is None:
            return
        self._thought.stop()
        self._thought = None
        self.console.print(folded(self.thinking), style="dim italic", markup=False, highlight=False)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@contextlib.contextmanager
def cancel_on_interrupt(client: Client, rid: str) -> Iterator[None]:
    """While streaming `rid`, Ctrl-C cancels that job on the daemon; a second Ctrl-C gives up at once."""
    cancel_rid: str | None = None

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal cancel_rid
        if cancel_rid is not None:
            raise KeyboardInterrupt
        cancel_rid = client.send("cancel", rid=client.new_id("c"), target=rid)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if cancel_rid is not None:  # read the cancel's answer so it does not linger on the connection
        with contextlib.suppress(DaemonError):
            for _ in client.events(cancel_rid):
                pass


def _draw(view: ReplyView, ev: dict[str, Any]) -> None:
    kind = ev["ev"]
    if kind == "queued":
        ahead = ev.get("position", 1) - 1
        view.status(f"queued · {ahead} ahead" if ahead else "starting…")
    elif kind == "loading":
        view.status(f"loading {ev.get('model', 'model')}…")
    elif kind == "prefilling" and ev.get("total"):
        view.status(f"reading the prompt · {100 * ev.get('done', 0) // ev['total']}%")
    elif kind in ("started", "prefill"):
        view.status("thinking…")
    elif kind == "token":
        view.token(ev["text"])
    elif kind == "thinking":
        view.think(ev["text"])
    elif kind == "tool_call":
        view.tool_call(ev)


def stream(client: Client, view: ReplyView, **request: Any) -> Reply:
    """Send one `chat` request and draw it; returns the reply, `stats=None` when cancelled."""
    rid = client.send("chat", **request)
    stats: dict[str, Any] | None = None
    try:
        with cancel_on_interrupt(client, rid):
            try:
                for ev in client.events(rid):
                    if ev["ev"] == "done":
                        stats = ev.get("stats", {})
                    else:
                        _draw(view, ev)
            except DaemonError as e:
                if e.code != "cancelled":
                    raise
    finally:
        view.close()
    return Reply(view.text, stats)
