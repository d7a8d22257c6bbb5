"""The last finished jobs with their wait, prefill and generate timings, newest first."""
from __future__ import annotations

from textual.widgets import DataTable

from rk.tui import render
from rk.tui.snapshot import QueueSnapshot


class RecentTable(DataTable[str]):
    def __init__(self, **kw: object) -> None:
        super().__init__(cursor_type="none", zebra_stripes=False, **kw)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.add_columns(*render.RECENT_COLUMNS)
        self.border_title = "recent"

    def show(self, snap: QueueSnapshot) -> None:
        """The finished jobs, and the daemon's totals since it started in the border."""
        self.border_title = f"recent · {render.totals(snap)}"
        self.clear()
        for j in snap.recent:
            self.add_row(*render.recent_row(j))
