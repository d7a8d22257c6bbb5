"""One snapshot as Rich renderables: `rk top --once` prints them, the dashboard's widgets show them.

Imports Rich only (never Textual), so `rk top --once` starts fast and works in scripts and bug reports.
"""
from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rk.tui.snapshot import FinishedJob, QueuedJob, QueueSnapshot

QUEUE_COLUMNS = ("#", "job", "model", "kind", "state", "progress", "waited", "from")  # most telling first: 80 columns cut "from"
RECENT_COLUMNS = ("job", "model", "from", "result", "wait", "prefill", "generate", "tok/s")
BAR_WIDTH = 16


def duration(s: float) -> str:
    """Seconds as the two largest units: 45s, 3m05s, 2h07m, 3d04h."""
    s = int(s)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // sub_size:02d}{sub}"
    return f"{s}s"


def ms(v: float) -> str:
    return f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.1f} s"


def source(src: str, peer: str) -> str:
    """Where a job came from: the API, plus the client's address when it is remote."""
    host = peer.rsplit(":", 1)[0] if peer and peer != "unix" else ""
    return f"{src} {host}" if host else src


def origin(j: QueuedJob) -> str:
    """The API and the client (its hashed key, address or Unix user), or the address alone."""
    return f"{j.source} {j.client}" if j.client else source(j.source, j.peer)


def queue_row(j: QueuedJob) -> tuple[str, ...]:
    pos = "▶" if j.state != "waiting" else str(j.position)
    unit = "tok" if j.unit == "tokens" else j.unit
    progress = f"{j.done}/{j.total} {unit}" if j.total else f"{j.done} {unit}"
    return (pos, j.id, j.model, j.kind, j.state, progress, ms(j.waited_ms), origin(j))


def recent_row(j: FinishedJob) -> tuple[str, ...]:
    tps = f"{j.tokens_per_s:.1f}" if j.tokens_per_s else "-"
    return (j.id, j.model, source(j.source, ""), j.outcome, ms(j.wait_ms), ms(j.prefill_ms),
            ms(j.generate_ms) if j.generate_ms else "-", tps)


def header(snap: QueueSnapshot | None, link: str) -> Text:
    """One line: daemon, host, backend, uptime, and whether the figures are live."""
    state = {"live": ("● live", "green"), "paused": ("⏸ paused", "yellow"),
             "connecting": ("connecting…", "yellow")}.get(link, ("disconnected — retrying", "bold red"))
    t = Text()
    t.append("rk top", style="bold")
    if snap is not None:
        t.append(f"  rk {snap.version} on {snap.hostname or '?'} · {snap.backend} · up {duration(snap.uptime_s)}")
    t.append("  ")
    t.append(state[0], style=state[1])
    return t


def running(snap: QueueSnapshot) -> Text:
    """The running job in three short lines (a half-width pane at 80 columns), or "idle"."""
    j = snap.running
    t = Text(no_wrap=True, overflow="ellipsis")
    if j is None:
        t.append("idle", style="dim")
        return t
    t.append(f"{j.id} ", style="bold")
    t.append(f"{j.model} · {j.state}\n")
    rate = f" · {j.tokens_per_s:.1f} tok/s" if j.tokens_per_s else ""
    t.append(f"{j.done}/{j.total} {j.unit}{rate}\n")
    t.append(f"from {origin(j)} · waited {ms(j.waited_ms)}", style="dim")
    return t


def totals(snap: QueueSnapshot) -> str:
    tot = snap.totals
    return (f"{tot.get('done', 0)} done · {tot.get('tokens', 0)} tokens · {tot.get('errors', 0)} errors · "
            f"{tot.get('cancelled', 0)} cancelled")


def gauges(snap: QueueSnapshot) -> RenderableType:
    """NPU load per core, frequency and memory (CPU without an NPU), runner memory, loaded models."""
    bars = Table.grid(padding=(0, 1))
    bars.add_column(no_wrap=True)
    bars.add_column(width=BAR_WIDTH)
    bars.add_column(justify="right", no_wrap=True)
    loads = [(f"NPU{i}", v) for i, v in enumerate(snap.npu.core_loads)] if snap.npu else [("CPU", snap.cpu_percent)]
    used, total = snap.memory_used_mb, snap.memory_total_mb
    if used is not None and total:
        loads.append(("MEM", 100 * used / total))
    for label, pct in loads:
        bars.add_row(label, ProgressBar(total=100, completed=pct or 0, width=BAR_WIDTH),
                     "n/a" if pct is None else f"{pct:.0f}%")
    figures = [f"runner {snap.runner_rss_mb:.0f} MB"]
    if used is not None and total:
        figures.insert(0, f"mem {used / 1024:.1f}/{total / 1024:.1f} GB")
    if snap.npu is not None:
        figures.insert(0, "n/a MHz" if snap.npu.freq_mhz is None else f"{snap.npu.freq_mhz:.0f} MHz")
    lines = Text(" · ".join(figures), style="dim", no_wrap=True, overflow="ellipsis")
    for m in snap.loaded:
        left = "kept" if m.expires_at is None else f"expires {duration(max(0.0, m.expires_at - snap.daemon_time))}"
        lines.append("\n")
        lines.append(m.name, style="cyan")
        lines.append(f" {m.memory_mb:.0f} MB · {left}")
    for p in snap.pulls:
        lines.append("\n")
        lines.append(f"⇣ {p.model}", style="magenta")
        lines.append(f" {pull_progress(p.completed, p.total)}")
    return Group(bars, lines)


def pull_progress(completed: int, total: int) -> str:
    """`45% · 120/260 MB` for a download (`rk top` and `rk ps` alike)."""
    if not total:
        return "starting"
    return f"{100 * completed // total}% · {completed / 2**20:.0f}/{total / 2**20:.0f} MB"


def table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    t = Table(*columns, title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for r in rows:
        t.add_row(*r)
    return t


def snapshot(snap: QueueSnapshot) -> RenderableType:
    """The whole dashboard as one static renderable, top to bottom."""
    return Group(
        header(snap, "live"),
        Text(),
        running(snap),
        Text(totals(snap), style="dim"),
        Text(),
        gauges(snap),
        Text(),
        table(f"queue ({len(snap.queue)})", QUEUE_COLUMNS, [queue_row(j) for j in snap.queue]),
        Text(),
        table("recent", RECENT_COLUMNS, [recent_row(j) for j in snap.recent]),
    )


def print_snapshot(wire: dict[str, Any], console: Console | None = None) -> None:
    """Print one `snapshot` event (as received) and return: `rk top --once`."""
    (console or Console()).print(snapshot(QueueSnapshot.from_wire(wire, time.time())))
