"""The top line: daemon version, host, backend, uptime, and whether the figures are live."""
from __future__ import annotations

from textual.widgets import Static

from rk.tui import render
from rk.tui.snapshot import QueueSnapshot


class DaemonHeader(Static):
    def show(self, snap: QueueSnapshot | None, link: str) -> None:
        """`link` is live, paused, connecting or disconnected."""
        self.set_class(link == "disconnected", "-disconnected")
        self.update(render.header(snap, link))
