"""The queue in position order (running job first); the highlighted row is what `c` cancels."""
from __future__ import annotations

from textual.widgets import DataTable

from rk.tui import render
from rk.tui.snapshot import QueuedJob, QueueSnapshot


class QueueTable(DataTable[str]):
    def __init__(self, **kw: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)  # type: ignore[arg-type]
        self._jobs: dict[str, QueuedJob] = {}

    def on_mount(self) -> None:
        self.add_columns(*render.QUEUE_COLUMNS)

    def show(self, snap: QueueSnapshot) -> None:
        """Replace the rows, keeping the highlight on the same job while it is still queued."""
        selected = self.selected_job()
        self.clear()
        self._jobs = {j.id: j for j in snap.queue}
        for j in snap.queue:
            self.add_row(*render.queue_row(j), key=j.id)
        if selected is not None and selected.id in self._jobs:
            self.move_cursor(row=self.get_row_index(selected.id), animate=False)
        self.border_title = f"queue ({len(snap.queue)})"

    def selected_job(self) -> QueuedJob | None:
        if not self._jobs or not self.is_valid_row_index(self.cursor_row):
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self._jobs.get(key or "")
