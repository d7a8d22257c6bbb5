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
    """On a terminal, one rich progress bar per file (bytes, rate, ETA); elsewhere (logs, scripts) one
    line per status and per finished file."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.console = Console(highlight=False)
        self.live = self.console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                 disable=not self.live)
        self.tasks: dict[str, Any] = {}

    def show(self, ev: dict[str, Any]) -> None:
        digest, done, total = ev.get("digest"), ev.get("completed") or 0, ev.get("total")
        if digest is None:
            self.console.print(ev.get("status", ""))
        elif self.live:
            if digest not in self.tasks:
                self.tasks[digest] = self.progress.add_task(ev["status"], total=total)
            self.progress.update(self.tasks[digest], completed=done, total=total)
        elif total is not None and done >= total and digest not in self.tasks:
            self.tasks[digest] = True
            self.console.print(f"{ev['status']}: {total} bytes")


def pull(ctx: typer.Context, name: str = NAME) -> None:
    """Download a model from the Hugging Face hub: GGUF for the CPU, .rkllm for the NPU."""
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
