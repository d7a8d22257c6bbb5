"""NPU load per core, frequency and memory (CPU and runner memory without an NPU), and loaded models."""
from __future__ import annotations

from textual.widgets import Static

from rk.tui import render
from rk.tui.snapshot import QueueSnapshot


class ResourceGauges(Static):
    def show(self, snap: QueueSnapshot) -> None:
        self.border_title = "NPU" if snap.npu is not None else "CPU"
        self.update(render.gauges(snap))
