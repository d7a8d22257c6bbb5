"""`rk pull hf.co/OWNER/REPO[:TAG]`: fetch a model from the hub through the daemon, with a progress bar.

The daemon downloads; this command follows its `progress` events. Ctrl-C closes the connection, which
stops the download (unless another client follows it) and keeps the partial file: pull again to resume.
"""
from __future__ import annotations

from typing import Any

import typer

from rk.cliutil import fail, run_client

NAME = typer.Argument(..., help="hf.co/OWNER/REPO[:TAG]; TAG is a quant (Q4_K_M) or part of a file name (rk3588-w8a8).")


class _Bars:
    """One rich progress bar per file (bytes, rate, ETA); other statuses as plain lines."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
        self.tasks: dict[str, Any] = {}

    def show(self, ev: dict[str, Any]) -> None:
        digest = ev.get("digest")
        if digest is None:
            self.progress.console.print(ev.get("status", ""))
            return
        if digest not in self.tasks:
            self.tasks[digest] = self.progress.add_task(ev["status"], total=ev.get("total"))
        self.progress.update(self.tasks[digest], completed=ev.get("completed") or 0, total=ev.get("total"))


def pull(ctx: typer.Context, name: str = NAME) -> None:
    """Download a model from the Hugging Face hub (GGUF for the CPU, .rkllm for the NPU) and register it."""
    bars = _Bars()

    def body(c: Any) -> None:
        with bars.progress:
            try:
                for ev in c.events(c.send("pull", model=name)):
                    if ev.get("ev") == "progress":
                        bars.show(ev)
            except KeyboardInterrupt:
                raise fail("interrupted; the partial download is kept: run the same `rk pull` to resume", 130) from None

    run_client(ctx, body)
