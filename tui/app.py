"""`rk top`: a live dashboard of one daemon's queue, running job, timings and NPU.

One async worker reads the `watch` stream and keeps the latest snapshot; widgets only render it.
When the daemon goes away the header says so and the worker reconnects until it is back.
"""
from __future__ import annotations

import asyncio
from typing import TypeVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Footer

from rk.client import DaemonError, DaemonUnavailable, Endpoint
from rk.tui.snapshot import QueuedJob, QueueSnapshot
from rk.tui.source import DaemonSource, SnapshotSource
from rk.tui.widgets.confirm import ConfirmDialog
from rk.tui.widgets.gauges import ResourceGauges
from rk.tui.widgets.header import DaemonHeader
from rk.tui.widgets.help import HelpDialog
from rk.tui.widgets.model_picker import ModelPicker
from rk.tui.widgets.queue_table import QueueTable
from rk.tui.widgets.recent_table import RecentTable
from rk.tui.widgets.running_panel import RunningPanel

W = TypeVar("W", bound=Widget)
LINK_ERRORS = (DaemonUnavailable, DaemonError, ConnectionError, OSError, asyncio.IncompleteReadError, ValueError)


class TopApp(App[None]):
    CSS_PATH = "rk.tcss"
    TITLE = "rk top"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("c", "cancel_job", "cancel job"),
        Binding("u", "unload_model", "unload"),
        Binding("p", "toggle_pause", "pause"),
        Binding("question_mark", "help", "help", key_display="?"),
    ]

    link: reactive[str] = reactive("connecting")  # connecting | live | disconnected
    paused: reactive[bool] = reactive(False)

    def __init__(self, source: SnapshotSource, retry_s: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.retry_s = retry_s
        self.latest: QueueSnapshot | None = None
        self.shown: QueueSnapshot | None = None

    def part(self, kind: type[W]) -> W:
        """A dashboard widget, found on the main screen even while a dialog is on top."""
        return self.screen_stack[0].query_one(kind)

    @property
    def queue_table(self) -> QueueTable:
        return self.part(QueueTable)

    def compose(self) -> ComposeResult:
        yield DaemonHeader(id="header")
        with Horizontal(id="top-row"):
            yield RunningPanel(id="running")
            yield ResourceGauges(id="gauges")
        yield QueueTable(id="queue")
        yield RecentTable(id="recent")
        yield Footer()

    def on_mount(self) -> None:
        self._show_header()
        self.follow_daemon()

    @work(exclusive=True, group="watch")
    async def follow_daemon(self) -> None:
        """Keep the latest snapshot; on a broken link, say so and retry every `retry_s`, forever."""
        while True:
            try:
                async for snap in self.source.snapshots():
                    if not self.is_running:  # shutting down: the widgets are being removed
                        return
                    self.latest = snap
                    self.link = "live"
                    if not self.paused:
                        self._show(snap)
            except LINK_ERRORS:
                pass
            self.link = "disconnected"
            await asyncio.sleep(self.retry_s)

    def _show(self, snap: QueueSnapshot) -> None:
        self.shown = snap
        self.part(RunningPanel).show(snap)
        self.part(ResourceGauges).show(snap)
        self.queue_table.show(snap)
        self.part(RecentTable).show(snap)
        self._show_header()

    def _show_header(self) -> None:
        link = "paused" if self.paused and self.link == "live" else self.link
        self.part(DaemonHeader).show(self.shown, link)

    def watch_link(self) -> None:
        self._show_header()

    def watch_paused(self, paused: bool) -> None:
        if not paused and self.latest is not None:
            self._show(self.latest)
        self._show_header()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_help(self) -> None:
        self.push_screen(HelpDialog())

    def action_cancel_job(self) -> None:
        job = self.queue_table.selected_job()
        if job is None:
            self.notify("No job selected: the queue is empty.", severity="warning")
            return
        self.confirm_cancel(job)

    def action_unload_model(self) -> None:
        models = [m.name for m in (self.shown.loaded if self.shown else ())]
        if not models:
            self.notify("No model is loaded.", severity="warning")
            return
        self.pick_unload(models)

    @work(group="actions")
    async def confirm_cancel(self, job: QueuedJob) -> None:
        if not await self.push_screen_wait(ConfirmDialog(f"Cancel {job.id} ({job.kind}, {job.model}, {job.state})?")):
            return
        try:
            await self.source.cancel(job.id)
        except LINK_ERRORS as e:
            self.notify(f"Could not cancel {job.id}: {e}", severity="error")
            return
        self.notify(f"Cancelled {job.id}.")

    @work(group="actions")
    async def pick_unload(self, models: list[str]) -> None:
        model = await self.push_screen_wait(ModelPicker("Unload which model? (Esc: none)", models))
        if model is None:
            return
        self.notify(f"Unloading {model} once the jobs ahead finish…")
        try:
            await self.source.unload(model)
        except LINK_ERRORS as e:
            self.notify(f"Could not unload {model}: {e}", severity="error")
            return
        self.notify(f"Unloaded {model}.")


def run_dashboard(endpoint: Endpoint) -> None:
    TopApp(DaemonSource(endpoint)).run()
