"""The `rk embed` progress bar on stderr: texts done, texts/s, ETA. Imported only when it is drawn."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.0f} texts/s", style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(total: int | None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; draws only when stderr is a terminal, so logs and pipes stay clean."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("texts"), RateColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("embed", total=total)
        yield lambda n: bar.advance(task, n)
