"""The keys of `rk top` and what the panes show, in a modal."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]rk top[/b] — the daemon's one FIFO queue, live

  [b]↑/↓[/b]  select a job in the queue
  [b]c[/b]    cancel the selected job (asks first)
  [b]u[/b]    unload a loaded model
  [b]p[/b]    pause / resume updates
  [b]q[/b]    quit
  [b]?[/b]    this help (any key closes it)

Queue: ▶ marks the running job; # is the position.
Running: tokens/s sparkline over recent snapshots.
Gauges: NPU load per core, frequency and memory;
CPU and runner memory when there is no NPU.
"""


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter,space", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(HELP)
