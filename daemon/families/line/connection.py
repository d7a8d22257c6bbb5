"""One line-protocol connection: many jobs multiplexed by client-chosen ids, each streamed as it runs."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import orjson

from rk.daemon import accesslog
from rk.daemon.clients import client_id
from rk.daemon.errors import RkError
from rk.daemon.events import Done, Failed
from rk.daemon.families.line import adapter as lineproto
from rk.daemon.families.line import watch
from rk.daemon.jobs import Job
from rk.daemon.service import Service
from rk.daemon.store.importer import ImportRequest, import_model
from rk.daemon.ticket import Ticket

log = logging.getLogger("rk.daemon.line")
MAX_KEY_FAILURES = 5  # lines without the right key before a TCP peer is hung up on


class LineConnection:
    def __init__(self, service: Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, needs_key: bool) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.authed = not needs_key
        self.local = peer == "unix" or peer.startswith(("127.", "[::1]", "::1:"))
        self.key_failures = 0
        self.client = client_id(writer.transport, None)  # becomes the key's once one is shown
        self.jobs: dict[str, Ticket] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.pulls: dict[str, asyncio.Task[None]] = {}

    def send(self, obj: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(lineproto.encode(obj))

    async def serve(self) -> None:
        skipping = False  # inside the tail of an over-long line
        try:
            while True:
                try:
                    line = await self._next_line()
                except asyncio.TimeoutError:
                    self._log_timeout()
                    break  # idle with nothing in flight: a half-open or forgotten connection
                except asyncio.IncompleteReadError as e:
                    line = e.partial  # the last line, without a newline, then EOF
                    if not line:
                        break
                except asyncio.LimitOverrunError as e:
                    await self._drop_overlong(e.consumed, first=not skipping)
                    skipping = True
                    if self._too_many_key_failures():
                        break
                    continue
                except ConnectionError:
                    break
                if skipping:  # the rest of the over-long line, up to its newline
                    skipping = False
                    continue
                if line.strip():
                    self.handle(line)
                await self.writer.drain()
                if self._too_many_key_failures():
                    break
        finally:
            await self.close()

    def _log_timeout(self) -> None:
        if not self.authed:
            log.info("closing %s: no complete authenticated line in %.0f s", self.peer,
                     self.service.settings.header_timeout_s)

    async def _drop_overlong(self, consumed: int, first: bool) -> None:
        """Drop what has arrived of an over-long line; its first piece is answered (and, from a stranger, a miss)."""
        await self.reader.readexactly(consumed)
        if first:
            self.key_failures += not self.authed  # a stranger's endless line is a miss too
            self.send(lineproto.error(None, RkError(
                "request_too_large", f"line longer than {self.service.settings.max_body_bytes} bytes")))

    def _too_many_key_failures(self) -> bool:
        if self.key_failures < MAX_KEY_FAILURES:
            return False
        log.info("closing %s: %d lines without the right API key", self.peer, self.key_failures)
        return True

    async def _next_line(self) -> bytes:
        """The next line; a connection with no job or watch in flight may idle only so long.

        Until a TCP peer has shown the key, each line must arrive whole within the header timeout,
        like an HTTP request head: a stranger cannot park a large partial line for the idle timeout.
        """
        settings = self.service.settings
        if not self.authed:
            return await asyncio.wait_for(self.reader.readuntil(b"\n"), settings.header_timeout_s)
        if self.tasks:
            return await self.reader.readuntil(b"\n")
        return await asyncio.wait_for(self.reader.readuntil(b"\n"), settings.idle_timeout_s)

    def handle(self, line: bytes) -> None:
        svc = self.service
        if not self.authed and not self.authenticate(line):
            return
        try:
            req = lineproto.parse_line(line, svc.settings, self.peer)
        except RkError as e:
            rid = None
            with contextlib.suppress(orjson.JSONDecodeError):
                rid = lineproto.request_id(orjson.loads(line))
            self.send(lineproto.error(rid, e))
            return
        try:
            self.dispatch(req)
        except RkError as e:
            self.send(lineproto.error(req.id, e))

    def authenticate(self, line: bytes) -> bool:
        """The key is checked before anything else in a line is looked at; each miss counts."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        key = obj.get("key") if isinstance(obj, dict) else None
        if isinstance(key, str) and self.service.key_ok(key):
            self.authed = True
            self.client = client_id(None, key)
            return True
        self.key_failures += 1
        left = MAX_KEY_FAILURES - self.key_failures
        self.send(lineproto.error(lineproto.request_id(obj), RkError(
            "unauthorized", "this daemon needs an API key on TCP (--api-key / RK_API_KEY)"
            + ("" if left > 0 else "; closing the connection"))))
        return False

    def dispatch(self, req: lineproto.Request) -> None:
        if req.job is not None:
            self._submit(req, req.job)
            return
        handler = self.OPS.get(req.op)
        if handler is None:
            raise RkError("bad_request", f"op {req.op!r} is not available on this daemon", param="op")
        handler(self, req)

    def _submit(self, req: lineproto.Request, job: Job) -> None:
        if req.id in self.jobs:
            raise RkError("bad_request", f"id {req.id!r} is already in use on this connection", param="id")
        ticket = self.service.scheduler.submit(job, client_id=self.client)
        self.jobs[req.id] = ticket
        while not ticket.events.empty():  # its position goes out now, not after a burst of arrivals
            self.send(lineproto.render(req.id, ticket.id, ticket.events.get_nowait()))
        self.spawn(self.stream(req.id, ticket))

    def _cancel(self, req: lineproto.Request) -> None:
        assert req.target is not None
        svc = self.service
        if req.target in self.pulls:
            self.pulls[req.target].cancel()  # leaves the pull; the download stops if nobody else follows it
        else:
            ticket = self.jobs.get(req.target) or svc.scheduler.get(req.target)
            if ticket is None or not svc.scheduler.cancel(ticket.id):
                raise RkError("bad_request", f"no running or waiting job {req.target!r}", param="target")
        self.send({"id": req.id, "ev": "done", "stats": {}})

    def _status(self, req: lineproto.Request) -> None:
        self.send({"id": req.id, "ev": "snapshot", **msgspec.to_builtins(self.service.status())})

    def _models(self, req: lineproto.Request) -> None:
        svc = self.service
        status = svc.status()
        self.send({"id": req.id, "ev": "models", "models": [svc.model_info(m, status) for m in svc.store.list()]})

    def _show(self, req: lineproto.Request) -> None:
        svc = self.service
        m = svc.store.get(req.model or "")
        self.send({"id": req.id, "ev": "model", **svc.model_info(m, svc.status()), "manifest": m.to_dict()})

    def _import(self, req: lineproto.Request) -> None:
        assert req.imported is not None
        if not self.local:
            raise RkError("unauthorized", "import reads a file on the daemon's machine: only local clients may "
                          "(the Unix socket or loopback TCP)")
        self.spawn(self.import_file(req.id, req.imported))

    def _drain(self, req: lineproto.Request) -> None:
        """`drain` or `undrain`; balancers' agent-check replies follow it (agentcheck.py)."""
        scheduler = self.service.scheduler
        scheduler.draining = req.op == "drain"
        self.send({"id": req.id, "ev": "done", "stats": {}, "draining": scheduler.draining})

    def _version(self, req: lineproto.Request) -> None:
        self.send({"id": req.id, "ev": "version", "version": self.service.version,
                   "protocol": lineproto.PROTOCOL_VERSION})

    def _watch(self, req: lineproto.Request) -> None:
        """Snapshots until the connection closes; see daemon/watch.py."""
        self.spawn(watch.stream(self, req.id))

    def _pull(self, req: lineproto.Request) -> None:
        if req.id in self.pulls:
            raise RkError("bad_request", f"id {req.id!r} is already in use on this connection", param="id")
        self.pulls[req.id] = self.spawn(self.pull(req.id, req.model or ""))

    OPS: ClassVar[dict[str, Callable[[LineConnection, lineproto.Request], None]]] = {
        "cancel": _cancel, "status": _status, "models": _models, "show": _show, "import": _import,
        "drain": _drain, "undrain": _drain, "version": _version, "watch": _watch, "pull": _pull,
    }

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def pull(self, rid: str, model: str) -> None:
        """A hub pull: `progress` events with Ollama's status fields, then `done` (or `error`)."""
        try:
            async with contextlib.aclosing(self.service.pulls.follow(model)) as events:
                async for ev in events:
                    self.send(lineproto.progress(rid, ev))
                    await self.writer.drain()
            self.send({"id": rid, "ev": "done", "stats": {}})
        except RkError as e:
            self.send(lineproto.error(rid, e))
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            self.send(lineproto.error(rid, RkError("cancelled", "the pull was cancelled; pull again to resume it")))
            raise
        finally:
            self.pulls.pop(rid, None)

    async def import_file(self, rid: str, req: ImportRequest) -> None:
        """`rk import`: copying a multi-gigabyte model file runs in a thread, never on the event loop."""
        svc = self.service
        try:
            m = await asyncio.to_thread(import_model, svc.store, req)
        except RkError as e:
            self.send(lineproto.error(rid, e))
            return
        self.send({"id": rid, "ev": "model", **svc.model_info(m, svc.status()), "manifest": m.to_dict()})

    def _log_job(self, rid: str, ticket: Ticket, outcome: str) -> None:
        accesslog.job(self.peer, ticket.kind, ticket.manifest.name, outcome,
                      (time.monotonic() - ticket.arrived) * 1000, rid, ticket.id)

    async def stream(self, rid: str, ticket: Ticket) -> None:
        logged = False
        try:
            async for ev in ticket.stream():
                if isinstance(ev, (Done, Failed)):  # logged before the client can see the job end
                    self._log_job(rid, ticket, "done" if isinstance(ev, Done) else ev.error.code)
                    logged = True
                self.send(lineproto.render(rid, ticket.id, ev))
                if self.writer.is_closing():
                    break
                await self.writer.drain()
        except ConnectionError:
            pass
        finally:
            if not logged:
                self._log_job(rid, ticket, "disconnected")
            self.jobs.pop(rid, None)
            if not ticket.finished:
                self.service.scheduler.cancel(ticket.id, "the client disconnected")

    async def close(self) -> None:
        """The client is gone: its waiting and running jobs are cancelled, never left to run for nobody."""
        for ticket in list(self.jobs.values()):
            self.service.scheduler.cancel(ticket.id, "the client disconnected")
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
