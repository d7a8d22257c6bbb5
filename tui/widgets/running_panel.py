"""The running job and a sparkline of tokens/s across the snapshots seen so far."""
from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from rk.tui import render
from rk.tui.snapshot import QueueSnapshot

HISTORY = 120  # samples kept for the sparkline


class RunningPanel(Vertical):
    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rates: deque[float] = deque(maxlen=HISTORY)

    def compose(self) -> ComposeResult:
        yield Static(id="running-text")
        yield Sparkline([], summary_function=max, id="rate")

    def show(self, snap: QueueSnapshot) -> None:
        """Add the running chat's tokens/s to the history (nothing is added while the daemon is idle)."""
        job = snap.running
        if job is not None and job.unit == "tokens":
            self.rates.append(job.tokens_per_s or 0.0)
        self.query_one("#running-text", Static).update(render.running(snap))
        self.query_one("#rate", Sparkline).data = list(self.rates)
        self.border_title = "running"
