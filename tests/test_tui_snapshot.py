"""SVG snapshots of the `rk top` dashboard fed fixed, fake snapshots (no daemon: this tests the look)."""
from __future__ import annotations

import asyncio
import copy
from typing import Any, AsyncIterator

from textual.pilot import Pilot

from rk.tui.app import TopApp
from rk.tui.snapshot import QueueSnapshot

NOW = 1_760_000_000.0

MEMORY = {"soc": "n/a", "driver": "n/a", "load": None, "freq_mhz": None, "memory": {"used_mb": 3120.0, "total_mb": 7940.0}}
NPU = {"soc": "RK3588", "driver": "0.9.8", "freq_mhz": 1000.0, "memory": {"used_mb": 3120.0, "total_mb": 7940.0},
       "load": [{"core": 0, "percent": 38}, {"core": 1, "percent": 41}, {"core": 2, "percent": 35}]}
WIRE: dict[str, Any] = {
    "version": "0.1.0", "socket": "/run/user/1000/rk/rk.sock", "tcp": "0.0.0.0:11434", "uptime_s": 3725.0,
    "host": {"name": "rock-5b", "time": NOW, "cpu_percent": 63.0, "cpus": 8},
    "queue": [
        {"id": "j41", "kind": "chat", "model": "qwen2.5:1.5b", "source": "openai", "peer": "192.168.1.20:53122",
         "state": "generating", "position": 1, "waited_ms": 820.0, "tokens_per_s": 14.2,
         "progress": {"done": 117, "total": 512, "unit": "tokens"}},
        {"id": "j42", "kind": "chat", "model": "qwen2.5:1.5b", "source": "cli", "peer": "unix",
         "state": "waiting", "position": 2, "waited_ms": 4310.0, "progress": {"done": 0, "total": 256, "unit": "tokens"}},
        {"id": "j43", "kind": "embed", "model": "all-minilm:l6-v2", "source": "ollama", "peer": "192.168.1.31:40112",
         "state": "waiting", "position": 3, "waited_ms": 2950.0, "progress": {"done": 64, "total": 1000, "unit": "texts"}},
        {"id": "j44", "kind": "chat", "model": "smollm2:135m", "source": "cli", "peer": "unix",
         "state": "waiting", "position": 4, "waited_ms": 1200.0, "progress": {"done": 0, "total": 128, "unit": "tokens"}},
    ],
    "loaded": [{"name": "qwen2.5:1.5b", "memory_mb": 1890.0, "loaded_at": NOW - 600, "expires_at": NOW + 245},
               {"name": "all-minilm:l6-v2", "memory_mb": 92.0, "loaded_at": NOW - 60, "expires_at": None}],
    "totals": {"accepted": 60, "done": 52, "cancelled": 2, "errors": 1, "tokens": 18234},
    "recent": [
        {"id": "j40", "kind": "chat", "model": "qwen2.5:1.5b", "source": "openai", "outcome": "done",
         "wait_ms": 310.0, "prefill_ms": 640.0, "generate_ms": 9100.0, "generate_tokens": 131},
        {"id": "j39", "kind": "embed", "model": "all-minilm:l6-v2", "source": "cli", "outcome": "done",
         "wait_ms": 12.0, "prefill_ms": 88.0, "generate_ms": 0.0, "generate_tokens": 0},
        {"id": "j38", "kind": "chat", "model": "qwen2.5:1.5b", "source": "ollama", "outcome": "cancelled",
         "wait_ms": 5020.0, "prefill_ms": 0.0, "generate_ms": 0.0, "generate_tokens": 0},
    ],
    "runner": {"pid": 4242, "rss_mb": 2104.0},
    "npu": MEMORY,
}
RATES = [0.0, 9.5, 13.1, 14.6, 13.9, 14.4, 12.8, 14.2]


def snapshots(wire: dict[str, Any]) -> list[QueueSnapshot]:
    """Several snapshots of one moment with a varying tokens/s, so the sparkline has a history."""
    out = []
    for rate in RATES:
        w = copy.deepcopy(wire)
        w["queue"][0]["tokens_per_s"] = rate
        out.append(QueueSnapshot.from_wire(w, NOW))
    return out


class FixedSource:
    """A snapshot source that plays a fixed list, then stays connected and silent."""

    def __init__(self, snaps: list[QueueSnapshot]) -> None:
        self.snaps = snaps

    def describe(self) -> str:
        return "fixed"

    async def snapshots(self) -> AsyncIterator[QueueSnapshot]:
        for s in self.snaps:
            yield s
        await asyncio.Event().wait()

    async def cancel(self, job_id: str) -> None:
        raise AssertionError("the snapshot tests do not act on the daemon")

    async def unload(self, model: str) -> None:
        raise AssertionError("the snapshot tests do not act on the daemon")


def app_for(wire: dict[str, Any]) -> tuple[TopApp, Any]:
    snaps = snapshots(wire)
    app = TopApp(FixedSource(snaps))

    async def settled(pilot: Pilot[None]) -> None:
        while app.shown is not snaps[-1]:
            await pilot.pause(0.01)
        await pilot.pause()

    return app, settled


def test_dashboard_cpu_80x24(snap_compare: Any) -> None:
    app, settled = app_for(WIRE)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settled)


def test_dashboard_npu_100x30(snap_compare: Any) -> None:
    app, settled = app_for(WIRE | {"npu": NPU})
    assert snap_compare(app, terminal_size=(100, 30), run_before=settled)


def test_cancel_asks_first(snap_compare: Any) -> None:
    app, settled = app_for(WIRE)

    async def press_c(pilot: Pilot[None]) -> None:
        await settled(pilot)
        await pilot.press("down", "c")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=press_c)
