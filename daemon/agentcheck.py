"""HAProxy's agent-check protocol (`rk serve --agent-port`): the board's own queue state, for a balancer.

Per TCP connection HAProxy may send one line (`agent-send`, here a model name), then reads one line
and the board closes. The reply is always the whole state, since "only the agent may revert its own
actions":

* `ready up N%`: the board can take a job; N falls as the predicted wait grows (busy.py), 100 when idle;
* `drain`: `rk drain`, shutting down, a near-full queue, or jobs waiting here that did not come
  through a balancer (`should_drain`);
* `down#why`: the runner cannot serve, or the named model is not on this board or failed to load.

A balancer is whoever asks this port: jobs from its address came through it. With `maxconn 1` the
balancer keeps its own queue, so a job of its own waits here only when several of its backends
share the board, and draining for that would strand its queued requests (HAProxy does not take a
backend's queue back when a server leaves drain). Each reply is built from what the scheduler keeps
anyway, so the port can be asked many times a second and answers even while tokens stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Iterable

from rk.daemon.errors import RkError
from rk.daemon.scheduler import Scheduler

log = logging.getLogger("rk.daemon.agent")
READ_S = 0.25  # how long to wait for HAProxy's `agent-send` line before answering for the whole board
MAX_LINE = 256
MAX_BALANCERS = 8  # addresses remembered as balancers (the most recent ones)
NEAR_FULL = 0.8  # a queue this full (of RK_MAX_QUEUE) drains the board


def host(peer: str) -> str:
    """`10.0.0.5:41234` -> `10.0.0.5` (a job's peer; "unix" stays "unix")."""
    return peer.rpartition(":")[0] or peer


def should_drain(scheduler: Scheduler, balancers: Iterable[str]) -> bool:
    """Balancers should send nothing new here for now."""
    waiting = scheduler.queue.waiting
    if scheduler.draining or scheduler.closing or len(waiting) >= NEAR_FULL * scheduler.settings.max_queue:
        return True
    known = set(balancers)
    return any(host(t.job.peer) not in known for t in waiting)


def reply(scheduler: Scheduler, model: str, balancers: Iterable[str] = ()) -> str:
    """The agent line for the board, or for `model` when HAProxy names one."""
    runner = scheduler.runner
    if runner.state == "down":
        return "down#" + _one_line(f"runner: {runner.down_reason}")
    if model:
        try:
            name = scheduler.store.get(model).name
        except RkError:
            return "down#" + _one_line(f"model {model} is not on this board")
        if name in scheduler.residency.failed:
            return "down#" + _one_line(f"model {name} failed to load: {scheduler.residency.failed[name]}")
    if should_drain(scheduler, balancers):
        return "drain"
    return f"ready up {scheduler.load().weight_percent()}%"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class AgentServer:
    """The listener; started with the daemon when RK_AGENT_PORT is set, closed last on shutdown."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.server: asyncio.AbstractServer | None = None
        self.balancers: dict[str, None] = {}  # addresses that asked, oldest first

    async def start(self, host: str, port: int) -> str:
        """Listen; returns the address actually bound (port 0 picks a free one)."""
        self.server = await asyncio.start_server(self._answer, host, port, limit=MAX_LINE, reuse_address=True)
        bound = self.server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.balancers.pop(peer[0], None)
            self.balancers[peer[0]] = None
            if len(self.balancers) > MAX_BALANCERS:
                del self.balancers[next(iter(self.balancers))]
        model = ""
        with contextlib.suppress(asyncio.TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            model = (await asyncio.wait_for(reader.readline(), READ_S)).decode("utf-8", "replace").strip()
        try:
            writer.write(reply(self.scheduler, model, self.balancers).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        except Exception:  # a bug here must not take the listener down: HAProxy keeps its last state
            log.exception("agent-check reply failed")
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
