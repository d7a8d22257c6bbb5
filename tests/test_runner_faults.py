"""Faults around the runner process and daemon restarts (issue 15, items 1-4), on real processes."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Callable

from rk.daemon.backends.base import RunnerConfig
from rk.daemon.runner.proxy import Runner

from daemon_proc import DaemonProc, start_daemon, synthetic_models

HI = [{"role": "user", "content": "hello there"}]


def runner_children() -> list[int]:
    """Live runner processes whose parent is this test process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"rk.daemon.runner.child" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(d.name))
    return out


def test_concurrent_starts_make_exactly_one_runner() -> None:
    async def main() -> None:
        r = Runner(RunnerConfig(), stall_timeout_s=60)
        try:
            await asyncio.gather(*(r.start() for _ in range(5)))
            assert runner_children() == [r.pid] and r.restarts == 0
        finally:
            await r.stop()
    asyncio.run(main())


def test_a_runner_that_died_while_idle_is_replaced_and_the_next_job_runs(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory()
    with d.client() as c:
        c.call("chat", model="syn:chat", messages=HI)
        for _ in range(5):
            pid = c.call("status")["runner"]["pid"]
            os.kill(pid, signal.SIGKILL)  # dies while idle; the next job arrives at once
            done = c.call("chat", model="syn:chat", messages=HI)
            assert done["ev"] == "done" and done["stats"]["generate_tokens"] == 2
        status = c.call("status")
    assert status["totals"]["runner_restarts"] == 5 and "error:runner_crashed" not in status["totals"]


def test_a_new_daemon_waits_until_the_draining_one_has_let_go_of_the_runner(tmp_path: Path) -> None:
    synthetic_models(tmp_path / "m")
    sock = tmp_path / "run" / "rk.sock"
    old = start_daemon(tmp_path / "a", models_dir=tmp_path / "m", bundled=False, socket_path=sock,
                       env={"RK_SHUTDOWN_GRACE": "1.5"})
    with old.client() as c:
        c.send("chat", model="syn:slow", messages=HI, options={"max_tokens": 1000})
        while c.read()["ev"] != "prefill":
            pass
        old_runner = c.call("status")["runner"]["pid"]
        old.proc.send_signal(signal.SIGTERM)
        new = start_daemon(tmp_path / "b", models_dir=tmp_path / "m", bundled=False, socket_path=sock)
        ev = c.read()
        while ev["ev"] not in ("done", "error"):
            ev = c.read()
    try:
        assert ev["ev"] == "error" and ev["code"] == "shutting_down"
        assert old.proc.poll() is not None or old.proc.wait(10) == 0  # gone before the new one answered
        try:
            os.kill(old_runner, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, "the old runner outlived its daemon's socket"
        assert "waiting up to" in new.log()
        with new.client() as c:
            assert c.call("chat", model="syn:chat", messages=HI)["ev"] == "done"
    finally:
        new.stop()


def test_a_second_daemon_on_a_live_socket_is_refused_at_once(tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory()
    t0 = time.monotonic()
    second = start_daemon(tmp_path / "second", models_dir=d.models_dir, bundled=False, socket_path=d.socket)
    assert second.proc.wait(25) == 1 and "already serving" in second.log()  # the first one answered `version`
    assert time.monotonic() - t0 < 25  # refused, not left waiting for the shutdown grace
    with d.client() as c:
        assert c.call("chat", model="syn:chat", messages=HI)["ev"] == "done"


def test_a_second_sigint_stops_the_running_job_at_once(tmp_path: Path) -> None:
    synthetic_models(tmp_path / "m")
    d = start_daemon(tmp_path / "d", models_dir=tmp_path / "m", bundled=False, env={"RK_SHUTDOWN_GRACE": "600"})
    with d.client() as c:
        c.send("chat", rid="long", model="syn:slow", messages=HI, options={"max_tokens": 100000})
        while c.read()["ev"] != "prefill":
            pass
        d.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        d.proc.send_signal(signal.SIGINT)  # do not wait out the 600 s grace
        ev = c.read()
        while ev["ev"] not in ("done", "error"):
            ev = c.read()
    assert d.proc.wait(30) == 0 and ev["ev"] == "error" and ev["code"] in ("shutting_down", "cancelled")
    assert not d.socket.exists()
