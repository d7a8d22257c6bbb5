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
    """Commands are numbered; each has its own event queue, so the next job's command can be sent
    while the current one runs (the runner starts it the moment the current one ends)."""

    def __init__(self, config: RunnerConfig, stall_timeout_s: float) -> None:
        self.config = config
        self.stall_timeout_s = stall_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self.generation = 0  # bumped per process start; loaded models and sent commands belong to one
        self.restarts = 0
        self._seq = 0
        self._control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._cancelled_at: dict[int, float] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    async def start(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            return
        if self.generation:
            self.restarts += 1
        self.generation += 1
        self._control = asyncio.Queue()
        self._pending.clear()
        self._cancelled_at.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rk.daemon.runner_child", orjson.dumps(dataclasses.asdict(self.config)).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28,
            start_new_session=True,  # the terminal's Ctrl-C goes to the daemon, which decides
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        ready = await self._next(self._control, self.stall_timeout_s)
        if ready.get("ev") != "ready":
            raise RkError("runner_crashed", "the runner process failed to start (see the daemon log)")
        log.info("runner started pid=%s generation=%s", self.proc.pid, self.generation)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Route each event to its command's queue; events of discarded commands are dropped."""
        assert proc.stdout is not None
        pending, control = self._pending, self._control
        while line := await proc.stdout.readline():
            ev = orjson.loads(line)
            q = pending.get(ev["seq"]) if "seq" in ev else control
            if q is not None:
                q.put_nowait(ev)
        for q in [control, *pending.values()]:
            q.put_nowait(_EOF)

    async def _next(self, q: asyncio.Queue[dict[str, Any]], timeout: float) -> dict[str, Any]:
        if q.empty():  # a stall watchdog only when we actually have to wait
            try:
                ev = await asyncio.wait_for(q.get(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
                raise RkError("timeout", f"the runner produced nothing for {timeout:.0f} s and was restarted") from None
        else:
            ev = q.get_nowait()
        if ev is _EOF:
            rc = await self._reap()
            why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            raise RkError("runner_crashed", f"the runner process died ({why}); it will be restarted")
        return ev

    async def send(self, cmd: dict[str, Any]) -> tuple[int, int]:
        """Start the runner if needed and send a command; returns (generation, seq) for `result`."""
        await self.start()
        return self.send_nowait(cmd)

    def send_nowait(self, cmd: dict[str, Any]) -> tuple[int, int]:
        """Queue a command in the running runner, behind any it is working on."""
        assert self.proc is not None and self.proc.stdin is not None, "the runner is not running"
        self._seq += 1
        self._pending[self._seq] = asyncio.Queue()
        self.proc.stdin.write(orjson.dumps(cmd | {"seq": self._seq}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        return self.generation, self._seq

    def is_live(self, ref: tuple[int, int]) -> bool:
        """Whether a sent command still belongs to the running process (a crash loses queued commands)."""
        return ref[0] == self.generation and ref[1] in self._pending and self.pid is not None

    async def result(self, ref: tuple[int, int], on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The final event of a sent command; its progress events go to `on_event` as they come."""
        _, seq = ref
        q = self._pending[seq]
        loop = asyncio.get_running_loop()
        try:
            while True:
                timeout = self.stall_timeout_s
                cancelled = self._cancelled_at.get(seq)
                if cancelled is not None:
                    timeout = max(0.01, min(timeout, cancelled + CANCEL_GRACE_S - loop.time()))
                ev = await self._next(q, timeout)
                kind = ev["ev"]
                if kind in ("prefill", "token"):
                    if on_event is not None:
                        on_event(ev)
                    continue
                if kind == "error":
                    raise RkError(ev["code"], ev["message"])
                return ev
        finally:
            self._pending.pop(seq, None)
            self._cancelled_at.pop(seq, None)

    async def call(self, cmd: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Send one command and return its final event."""
        return await self.result(await self.send(cmd), on_event)

    def cancel(self, ref: tuple[int, int] | None) -> None:
        """Abort a command in flight (rkllm_abort, or the per-token stop flag), or drop it if not yet begun."""
        if ref is None or not self.is_live(ref) or self.proc is None or self.proc.stdin is None:
            return
        self._cancelled_at[ref[1]] = asyncio.get_running_loop().time()
        self.proc.stdin.write(orjson.dumps({"op": "cancel", "seq": ref[1]}) + b"\n")

    def discard(self, ref: tuple[int, int]) -> None:
        """Cancel a command nobody will wait for (a prefetched job cancelled while still queued)."""
        self.cancel(ref)
        self._pending.pop(ref[1], None)
        self._cancelled_at.pop(ref[1], None)

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
