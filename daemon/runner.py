"""The daemon's side of a runner process: start it, send commands, stream its events, survive its death.

A crash (the pipe closes) fails the command in flight with `runner_crashed`; silence past the stall
timeout kills the process and fails it with `timeout`. Either way the next command starts a new process.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from typing import Any, Callable

import orjson

from rk.daemon.backends.base import RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.procinfo import rss_mb

log = logging.getLogger("rk.daemon.runner")
_EOF: dict[str, Any] = {"ev": "_eof"}
CANCEL_GRACE_S = 5.0  # a cancelled command that does not end by then has hung in native code


class Runner:
    def __init__(self, config: RunnerConfig, stall_timeout_s: float) -> None:
        self.config = config
        self.stall_timeout_s = stall_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self.generation = 0  # bumped per process start; loaded models belong to one generation
        self.restarts = 0
        self._seq = 0
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._cancelled_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    async def start(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            return
        if self.generation:
            self.restarts += 1
        self.generation += 1
        self._events = asyncio.Queue()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rk.daemon.runner_child", orjson.dumps(dataclasses.asdict(self.config)).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28,
            start_new_session=True,  # the terminal's Ctrl-C goes to the daemon, which decides
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        ready = await self._next(self.stall_timeout_s)
        if ready.get("ev") != "ready":
            raise RkError("runner_crashed", "the runner process failed to start (see the daemon log)")
        log.info("runner started pid=%s generation=%s", self.proc.pid, self.generation)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        events = self._events
        while line := await proc.stdout.readline():
            events.put_nowait(orjson.loads(line))
        events.put_nowait(_EOF)

    async def _next(self, timeout: float) -> dict[str, Any]:
        try:
            ev = await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise RkError("timeout", f"the runner produced nothing for {timeout:.0f} s and was restarted") from None
        if ev is _EOF:
            rc = await self._reap()
            why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            raise RkError("runner_crashed", f"the runner process died ({why}); it will be restarted")
        return ev

    async def call(self, cmd: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Send one command and return its final event; progress events go to `on_event`."""
        await self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self._seq += 1
        seq = self._seq
        self._cancelled_at = None
        self.proc.stdin.write(orjson.dumps(cmd | {"seq": seq}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        loop = asyncio.get_running_loop()
        while True:
            timeout = self.stall_timeout_s
            if self._cancelled_at is not None:
                timeout = max(0.01, min(timeout, self._cancelled_at + CANCEL_GRACE_S - loop.time()))
            ev = await self._next(timeout)
            if ev.get("seq") != seq:
                continue
            kind = ev["ev"]
            if kind in ("prefill", "token"):
                if on_event is not None:
                    on_event(ev)
                continue
            if kind == "error":
                raise RkError(ev["code"], ev["message"])
            return ev

    def cancel(self) -> None:
        """Ask the runner to abort the command in flight (rkllm_abort, or the per-token stop flag)."""
        if self.proc is None or self.proc.returncode is not None or self.proc.stdin is None:
            return
        self._cancelled_at = asyncio.get_running_loop().time()
        self.proc.stdin.write(orjson.dumps({"op": "cancel", "seq": self._seq}) + b"\n")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self._reap()

    async def _reap(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        rc = await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        return rc

    async def stop(self, timeout: float = 5.0) -> None:
        """Close stdin so the runner unloads and exits; kill it if it does not."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        await self.kill()

    def rss_mb(self) -> float:
        """Resident memory of the runner process (the models' real footprint on a CPU or NPU board)."""
        return rss_mb(self.pid) if self.pid is not None else 0.0
