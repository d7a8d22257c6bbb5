"""The daemon's side of the runner process: typed commands out, typed events back, and its death survived.

Each process start gets its own `_Process` (pipes, reader, pending commands), so a dying process can
only fail its own commands, never those of the one that replaced it. The runner acknowledges each
command when it begins it (`Begun`); a command the process never began when it died is reported as
such, and the caller runs it again on a fresh process instead of failing the job.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

from rk.daemon.backends.base import RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenSpec
from rk.daemon.procinfo import rss_mb
from rk.daemon.runner import wire
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.daemon.runner")
CANCEL_GRACE_S = 5.0  # a cancelled command that does not end by then has hung in native code
_EOF = object()


FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})  # a fault in native code


def why_dead(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


class NotBegun(RkError):
    """The runner died before it began this command: nothing ran, so running it again is safe."""

    def __init__(self, why: str) -> None:
        super().__init__("runner_crashed", f"the runner process died ({why}) before the job began")


class Crashed(RkError):
    """The runner died while running this command; `fault` when a fault signal killed it (a native crash,
    not a kill or an exit)."""

    def __init__(self, returncode: int) -> None:
        self.why = why_dead(returncode)
        super().__init__("runner_crashed", f"the runner process died ({self.why}); it will be restarted")
        self.fault = returncode < 0 and -returncode in FAULT_SIGNALS


class CallOwner(Protocol):
    """What a `Call` needs of the process it was sent to: whether it lives, and what it still owes."""

    @property
    def alive(self) -> bool: ...

    pending: dict[int, Call]


@dataclass(eq=False)
class Call:
    """A command sent to one runner process; its events arrive on its own queue."""

    seq: int
    process: CallOwner
    events: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    begun: bool = False
    cancelled_at: float | None = None

    @property
    def live(self) -> bool:
        """Still waiting for its final event from a process that is alive."""
        return self.process.alive and self.seq in self.process.pending


class RunnerPort(Protocol):
    """What the scheduler needs from a runner; tests provide an in-process one."""

    restarts: int
    down_reason: str | None  # why the last start failed; None once one succeeds

    @property
    def pid(self) -> int | None: ...

    @property
    def state(self) -> str: ...

    async def start(self) -> None: ...

    async def kill(self) -> None: ...

    async def load(self, manifest: Manifest, num_ctx: int, safe: bool = False) -> wire.Loaded: ...

    async def unload(self, model: str) -> None: ...

    async def generate(self, model: str, spec: GenSpec) -> Call: ...

    def generate_ahead(self, model: str, spec: GenSpec) -> Call | None: ...

    def events(self, call: Call) -> AsyncIterator[wire.Progress | wire.Finished]: ...

    async def embed(self, model: str, texts: tuple[str, ...], truncate: bool) -> Call: ...

    async def vectors(self, call: Call) -> wire.Vectors: ...

    def cancel(self, call: Call | None) -> None: ...

    def discard(self, call: Call) -> None: ...

    def rss_mb(self) -> float: ...

    async def stop(self) -> None: ...


class _Process:
    """One runner process: its pipes, its reader and the commands sent to it."""

    def __init__(self, proc: asyncio.subprocess.Process, generation: int) -> None:
        self.proc = proc
        self.generation = generation
        self.pending: dict[int, Call] = {}
        self.ready: asyncio.Future[wire.Ready] = asyncio.get_running_loop().create_future()
        self.eof = False
        self.reader = asyncio.create_task(self._read())

    @property
    def alive(self) -> bool:
        return not self.eof and self.proc.returncode is None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while (frame := await wire.read_frame(self.proc.stdout)) is not None:
                try:
                    ev = wire.decode(frame)
                except ValueError as e:
                    log.error("runner %s: %s", self.proc.pid, e)
                    continue
                if isinstance(ev, wire.Ready):
                    if not self.ready.done():
                        self.ready.set_result(ev)
                    continue
                call = self.pending.get(ev.seq)
                if call is None:
                    continue  # a discarded command's late events
                if isinstance(ev, wire.Begun):
                    call.begun = True
                else:
                    call.events.put_nowait(ev)
        finally:
            self.eof = True  # dead from this moment: no new command is sent to it
            if not self.ready.done():
                self.ready.set_exception(RkError("runner_crashed", "the runner process failed to start (see the daemon log)"))
            for call in self.pending.values():
                call.events.put_nowait(_EOF)

    def send(self, cmd: wire.Command) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(wire.encode(cmd))

    async def returncode(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)  # EOF with the process still there: it is wedged
        return await self.proc.wait()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.reader.cancel()


def _process(call: Call) -> _Process:
    """The runner process a call of this `Runner` was sent to."""
    assert isinstance(call.process, _Process)
    return call.process


class Runner:
    """Starts the runner process on demand (exactly one at a time) and speaks `wire` to it."""

    def __init__(self, config: RunnerConfig, stall_timeout_s: float) -> None:
        self.config = config
        self.stall_timeout_s = stall_timeout_s
        self.restarts = 0
        self._generation = 0
        self._seq = 0
        self._proc: _Process | None = None
        self._starting = asyncio.Lock()
        self.down_reason: str | None = None

    @property
    def state(self) -> str:
        """`starting` while a process starts, `down` when the last start failed, else `ready` (a
        process that died is started again by the next job, so the board can still serve)."""
        if self._starting.locked():
            return "starting"
        return "down" if self.down_reason is not None else "ready"

    @property
    def pid(self) -> int | None:
        return self._proc.proc.pid if self._proc is not None and self._proc.alive else None

    async def start(self) -> None:
        """Start the process unless a live one exists; concurrent callers share one start."""
        async with self._starting:
            if self._proc is not None and self._proc.alive:
                return
            try:
                await self._start()
            except Exception as e:
                self.down_reason = str(e) or type(e).__name__
                raise
            self.down_reason = None

    async def _start(self) -> None:
        if self._proc is not None:
            await self._proc.kill()
        if self._generation:
            self.restarts += 1
        self._generation += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rk.daemon.runner.child", wire.encode_config(self.config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28,
            start_new_session=True,  # the terminal's Ctrl-C goes to the daemon, which decides
        )
        self._proc = _Process(proc, self._generation)
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.ready), self.stall_timeout_s)
        except asyncio.TimeoutError:
            await self._proc.kill()
            raise RkError("runner_crashed", "the runner process did not start in time (see the daemon log)") from None
        log.info("runner started pid=%s generation=%s", proc.pid, self._generation)

    def _send(self, make: type, *args: object) -> Call:
        assert self._proc is not None and self._proc.alive, "the runner is not running"
        self._seq += 1
        call = Call(self._seq, self._proc)
        self._proc.pending[call.seq] = call
        self._proc.send(make(self._seq, *args))
        return call

    async def _next(self, call: Call) -> object:
        """The call's next event; a stall past the timeout kills the process."""
        timeout = self.stall_timeout_s
        if call.cancelled_at is not None:
            timeout = max(0.01, min(timeout, call.cancelled_at + CANCEL_GRACE_S - asyncio.get_running_loop().time()))
        try:
            ev = await asyncio.wait_for(call.events.get(), timeout) if call.events.empty() else call.events.get_nowait()
        except asyncio.TimeoutError:
            await _process(call).kill()
            raise RkError("timeout", f"the runner produced nothing for {timeout:.0f} s and was restarted") from None
        if ev is _EOF:
            rc = await _process(call).returncode()
            if not call.begun:
                raise NotBegun(why_dead(rc))
            raise Crashed(rc)
        if isinstance(ev, wire.Error):
            raise RkError(ev.code, ev.message)
        return ev

    async def _final(self, call: Call) -> object:
        try:
            return await self._next(call)
        finally:
            call.process.pending.pop(call.seq, None)

    async def load(self, manifest: Manifest, num_ctx: int, safe: bool = False) -> wire.Loaded:
        await self.start()
        ev = await self._final(self._send(wire.Load, manifest, num_ctx, safe))
        assert isinstance(ev, wire.Loaded)
        return ev

    async def unload(self, model: str) -> None:
        if self.pid is not None:
            await self._final(self._send(wire.Unload, model))

    async def generate(self, model: str, spec: GenSpec) -> Call:
        await self.start()
        return self._send(wire.Generate, model, spec)

    def generate_ahead(self, model: str, spec: GenSpec) -> Call | None:
        """Queue a generation behind the running command, if the process is alive; None otherwise."""
        return self._send(wire.Generate, model, spec) if self.pid is not None else None

    async def events(self, call: Call) -> AsyncIterator[wire.Progress | wire.Finished]:
        """A generation's events, ending with `Finished`; errors and crashes raise `RkError`."""
        try:
            while True:
                ev = await self._next(call)
                assert isinstance(ev, (wire.Progress, wire.Finished))
                yield ev
                if isinstance(ev, wire.Finished):
                    return
        finally:
            call.process.pending.pop(call.seq, None)

    async def embed(self, model: str, texts: tuple[str, ...], truncate: bool) -> Call:
        await self.start()
        return self._send(wire.Embed, model, texts, truncate)

    async def vectors(self, call: Call) -> wire.Vectors:
        ev = await self._final(call)
        assert isinstance(ev, wire.Vectors)
        return ev

    def cancel(self, call: Call | None) -> None:
        """Abort a command in flight (rkllm_abort, or the per-token stop flag), or skip it if not yet begun."""
        if call is None or not call.live:
            return
        call.cancelled_at = asyncio.get_running_loop().time()
        _process(call).send(wire.Cancel(call.seq))

    def discard(self, call: Call) -> None:
        """Cancel a command nobody will wait for (a job sent ahead, cancelled while still queued)."""
        self.cancel(call)
        call.process.pending.pop(call.seq, None)

    async def kill(self) -> None:
        if self._proc is not None:
            await self._proc.kill()

    async def stop(self, timeout: float = 5.0) -> None:
        """Close stdin so the runner unloads and exits; kill it if it does not."""
        p = self._proc
        if p is None:
            return
        if p.proc.stdin is not None:
            p.proc.stdin.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(p.proc.wait(), timeout)
        await p.kill()

    def rss_mb(self) -> float:
        """Resident memory of the runner process (the models' real footprint on a CPU or NPU board)."""
        return rss_mb(self.pid) if self.pid is not None else 0.0
