"""`rk top` driven by Pilot against real daemons with jobs in flight."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from textual.pilot import Pilot

from rk.client import Client, DaemonError, Endpoint
from rk.tui.app import TopApp
from rk.tui.source import DaemonSource
from rk.tui.widgets.header import DaemonHeader
from rk.tui.widgets.queue_table import QueueTable

from daemon_proc import DaemonProc, start_daemon

SLOW = {"model": "syn:slow", "messages": [{"role": "user", "content": "word " * 50}], "options": {"max_tokens": 4000}}


async def until(pilot: Pilot[None], cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def queue_jobs(c: Client, n: int) -> list[str]:
    """Queue `n` long chats on `c`; their daemon job ids in arrival order."""
    rids = [c.send("chat", rid=f"a{i}", **SLOW) for i in range(n)]
    return [next(c.events(rid))["job"] for rid in rids]


def header_text(app: TopApp) -> str:
    return str(app.query_one(DaemonHeader).content)


def test_queue_in_position_order_and_cancel_with_confirm(syn_daemon: DaemonProc) -> None:
    c = syn_daemon.client()
    jobs = queue_jobs(c, 4)  # the first runs for minutes at 20 tok/s; the others wait behind it
    app = TopApp(DaemonSource(Endpoint(socket=syn_daemon.socket)))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(QueueTable)
            await until(pilot, lambda: app.shown is not None and len(app.shown.queue) == 4 and table.row_count == 4)
            assert [str(k.value) for k in table.rows] == jobs
            assert [table.get_row_at(i)[0] for i in range(4)] == ["▶", "2", "3", "4"]
            table.focus()
            await pilot.press("down", "down")  # the second waiting job
            assert table.selected_job() is not None and table.selected_job().id == jobs[2]  # type: ignore[union-attr]
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: app.shown is not None and jobs[2] not in [j.id for j in app.shown.queue])
            assert [j.id for j in app.shown.queue] == [jobs[0], jobs[1], jobs[3]]  # type: ignore[union-attr]

    asyncio.run(scenario())
    with pytest.raises(DaemonError) as err:
        list(c.events("a2"))
    assert err.value.code == "cancelled"
    status = syn_daemon.client().call("status")
    assert [j["id"] for j in status["queue"]] == [jobs[0], jobs[1], jobs[3]]
    c.close()


def test_pressing_c_then_n_keeps_the_job(syn_daemon: DaemonProc) -> None:
    c = syn_daemon.client()
    jobs = queue_jobs(c, 2)
    app = TopApp(DaemonSource(Endpoint(socket=syn_daemon.socket)))

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.query_one(QueueTable)
            await until(pilot, lambda: table.row_count == 2)
            table.focus()
            await pilot.press("down", "c")
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause(0.5)
            assert [j.id for j in app.shown.queue] == jobs  # type: ignore[union-attr]

    asyncio.run(scenario())
    c.close()


def test_survives_a_daemon_restart(daemon_factory: Callable[..., DaemonProc], tmp_path: Path) -> None:
    first = daemon_factory()
    app = TopApp(DaemonSource(Endpoint(socket=first.socket)), retry_s=0.2)
    second: list[DaemonProc] = []

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.link == "live")
            await asyncio.to_thread(first.stop)
            await until(pilot, lambda: app.link == "disconnected")
            assert "disconnected — retrying" in header_text(app)
            second.append(await asyncio.to_thread(start_daemon, tmp_path / "again", socket_path=first.socket,
                                                  models_dir=first.models_dir, bundled=False))
            await until(pilot, lambda: app.link == "live", timeout=30)
            assert "● live" in header_text(app)
            with second[0].client() as c:
                rid = c.send("chat", **SLOW)
                job: Any = next(c.events(rid))["job"]
                await until(pilot, lambda: app.shown is not None and [j.id for j in app.shown.queue] == [job])

    try:
        asyncio.run(scenario())
    finally:
        for d in second:
            d.stop()
