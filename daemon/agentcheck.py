"""HAProxy's agent-check protocol (`rk serve --agent-port`): the board's own queue state, for a balancer.

Per TCP connection HAProxy may send one line (`agent-send`, here a model name), then reads one line
and the board closes. The reply is always the whole state, since "only the agent may revert its own
actions":

* `ready up N%`: the board can take a job; N falls as the predicted wait grows (busy.py), 100 when idle;
* `drain`: `rk drain`, shutting down, or jobs already wait here (scheduler.should_drain);
* `down#why`: the runner cannot serve, or the named model is not on this board or failed to load.

Each reply is built from what the scheduler keeps anyway, in O(1) of the queue, so the port can be
asked many times a second and answers even while the event loop streams tokens.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from rk.daemon.errors import RkError
from rk.daemon.scheduler import Scheduler

log = logging.getLogger("rk.daemon.agent")
READ_S = 0.25  # how long to wait for HAProxy's `agent-send` line before answering for the whole board
MAX_LINE = 256


def reply(scheduler: Scheduler, model: str) -> str:
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
    if scheduler.should_drain():
        return "drain"
    return f"ready up {scheduler.load().weight_percent()}%"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class AgentServer:
    """The listener; started with the daemon when RK_AGENT_PORT is set, closed last on shutdown."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> str:
        """Listen; returns the address actually bound (port 0 picks a free one)."""
        self.server = await asyncio.start_server(self._answer, host, port, limit=MAX_LINE, reuse_address=True)
        bound = self.server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        model = ""
        with contextlib.suppress(asyncio.TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            model = (await asyncio.wait_for(reader.readline(), READ_S)).decode("utf-8", "replace").strip()
        try:
            writer.write(reply(self.scheduler, model).encode() + b"\n")
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
