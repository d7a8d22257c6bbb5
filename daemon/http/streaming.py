"""A queued job seen from an HTTP handler: its outputs in order, streamed or folded into one reply.

Holding the first byte until the job produces output keeps every early failure (queue timeout,
prompt too large, model failed to load) a proper status code; later failures become an in-band
error chunk in the route's dialect. Agents' APIs (Anthropic Messages, OpenAI Responses) instead open
their stream when the job is accepted and send keep-alives while it waits (`relay_early`), so a
client behind other jobs or a long prefill does not time out; their errors after that go in-band.
When the handler ends early (the client went away: aiohttp cancels the handler, or a write fails),
the job is cancelled so the queue moves on at once.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Protocol, TypeAlias, Union

import numpy as np
import orjson
from aiohttp import web

from rk.daemon.clients import client_id
from rk.daemon.deadlines import peer_name
from rk.daemon.errors import RkError
from rk.daemon.events import Done, Failed, Thinking, Token, ToolCalled, Vectors
from rk.daemon.http.wire import SERVICE, family
from rk.daemon.jobs import Generated, Job, JobStats, ToolCall
from rk.daemon.vectors import assemble, check_finite

log = logging.getLogger("rk.daemon.http")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}
SSE_DONE = b"data: [DONE]\n\n"
Output: TypeAlias = Union[Token, Thinking, ToolCalled, Vectors, Done]
KEEPALIVE_S = 5.0  # an early-started stream writes a keep-alive after this long without output


def ndjson_line(obj: dict[str, Any]) -> bytes:
    """One compact JSON object and a newline: no blank lines, no pretty-printing."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def sse_event(obj: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; `event` names its type (`event: NAME`) for APIs whose clients dispatch on it."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"


def peer(request: web.Request) -> str:
    return peer_name(request.transport) if request.transport is not None else ""


class StreamFormat(Protocol):
    """How one family writes a job's stream: one object per request, so it may keep state (open and
    close blocks, number its events, remember what it has sent)."""

    headers: dict[str, str]

    def opening(self) -> bytes: ...
    def token(self, text: str) -> bytes: ...
    def thinking(self, text: str) -> bytes: ...
    def tool_call(self, call: ToolCall, index: int) -> bytes: ...
    def done(self, stats: JobStats, called: bool) -> bytes: ...
    def error(self, e: RkError) -> bytes: ...


class EarlyStreamFormat(StreamFormat, Protocol):
    """A format whose opening goes out as soon as the job is accepted, with keep-alive bytes (an SSE
    event the client's idle timer counts, such as Anthropic's `ping`) whenever the job has been quiet
    for a while: queued, loading, prefilling."""

    def keepalive(self) -> bytes: ...


Event: TypeAlias = "tuple[str, dict[str, Any]]"  # a named event: (its `event:` name, its data)


class EventSource(Protocol):
    """An API's stream for one reply as named events (pure, in the family's adapter: it numbers them, opens and
    closes blocks)."""

    def start(self) -> list[Event]: ...
    def keepalive(self) -> list[Event]: ...
    def text(self, text: str) -> list[Event]: ...
    def thinking(self, text: str) -> list[Event]: ...
    def tool_call(self, call: ToolCall) -> list[Event]: ...
    def done(self, stats: JobStats, called: bool) -> list[Event]: ...
    def error(self, e: RkError) -> list[Event]: ...


class NamedEvents:
    """An `EarlyStreamFormat` writing an `EventSource`'s events as `event: NAME` SSE."""

    headers = SSE_HEADERS

    def __init__(self, source: EventSource) -> None:
        self.source = source

    @staticmethod
    def _sse(events: list[Event]) -> bytes:
        return b"".join(sse_event(data, event=name) for name, data in events)

    def opening(self) -> bytes:
        return self._sse(self.source.start())

    def keepalive(self) -> bytes:
        return self._sse(self.source.keepalive())

    def token(self, text: str) -> bytes:
        return self._sse(self.source.text(text))

    def thinking(self, text: str) -> bytes:
        return self._sse(self.source.thinking(text))

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return self._sse(self.source.tool_call(call))

    def done(self, stats: JobStats, called: bool) -> bytes:
        return self._sse(self.source.done(stats, called))

    def error(self, e: RkError) -> bytes:
        return self._sse(self.source.error(e))


def _render(fmt: StreamFormat, ev: Output, calls: int) -> tuple[bytes, int]:
    """One output in `fmt`'s bytes, and the number of tool calls sent so far."""
    match ev:
        case Token():
            return fmt.token(ev.text), calls
        case Thinking():
            return fmt.thinking(ev.text), calls
        case ToolCalled():
            return fmt.tool_call(ev.call, calls), calls + 1
        case Done():
            return fmt.done(ev.stats, calls > 0), calls
    return b"", calls


class JobStream:
    """Submit a job on entry; on exit, cancel it if it has not finished (use as `async with`)."""

    def __init__(self, request: web.Request, job: Job) -> None:
        self.scheduler = request.app[SERVICE].scheduler
        who = client_id(request.transport, family(request).read_key(request.headers))
        self.ticket = self.scheduler.submit(job, client_id=who)
        self._events = self.ticket.stream()

    async def __aenter__(self) -> JobStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.ticket.finished:
            log.info("job %s cancelled: the HTTP client went away", self.ticket.id)
            self.scheduler.cancel(self.ticket.id, "the client disconnected")
        await self._events.aclose()

    async def outputs(self) -> AsyncIterator[Output]:
        """Tokens, vector slices and the final Done; a Failed event is raised as its RkError."""
        async for ev in self._events:
            if isinstance(ev, Failed):
                raise ev.error
            if isinstance(ev, (Token, Thinking, ToolCalled, Vectors, Done)):
                yield ev

    async def generated(self) -> Generated:
        """The whole reply (answer, reasoning, tool calls, figures), for `stream: false`."""
        text: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        async for ev in self.outputs():
            match ev:
                case Token():
                    text.append(ev.text)
                case Thinking():
                    thinking.append(ev.text)
                case ToolCalled():
                    calls.append(ev.call)
                case Done():
                    return Generated("".join(text), "".join(thinking), tuple(calls), ev.stats)
        raise RkError("internal", "the job ended without a result")

    async def vectors(self) -> tuple[np.ndarray, JobStats]:
        """All vectors of an embedding job in input order, however many slices it ran in."""
        slices: list[Vectors] = []
        async for ev in self.outputs():
            if isinstance(ev, Vectors):
                slices.append(ev)
            elif isinstance(ev, Done):
                matrix = assemble(slices)
                check_finite(matrix)
                return matrix, ev.stats
        raise RkError("internal", "the job ended without a result")

    async def done(self) -> JobStats:
        """The figures of a job whose output does not matter (load, unload)."""
        async for ev in self.outputs():
            if isinstance(ev, Done):
                return ev.stats
        raise RkError("internal", "the job ended without a result")

    async def relay(self, request: web.Request, fmt: StreamFormat) -> web.StreamResponse:
        """Stream tokens in `fmt`; the status line waits for the first output."""
        outputs = self.outputs()
        ev = await anext(outputs)  # a failure here is still a status code
        resp = web.StreamResponse(headers=fmt.headers)
        await resp.prepare(request)
        await resp.write(fmt.opening())
        calls = 0
        try:
            while True:
                out, calls = _render(fmt, ev, calls)
                await resp.write(out)
                if isinstance(ev, Done):
                    break
                ev = await anext(outputs)
        except RkError as e:
            await resp.write(fmt.error(e))
        await resp.write_eof()
        return resp

    async def relay_early(self, request: web.Request, fmt: EarlyStreamFormat,
                          every_s: float = KEEPALIVE_S) -> web.StreamResponse:
        """Stream in `fmt` from the moment the job is accepted, with a keep-alive after every `every_s`
        without output; any failure from here on is the format's in-band error event."""
        resp = web.StreamResponse(headers=fmt.headers)
        await resp.prepare(request)
        await resp.write(fmt.opening())
        outputs = self.outputs()
        pending: asyncio.Future[Output] = asyncio.ensure_future(anext(outputs))
        calls = 0
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=every_s)
                if not done:
                    await resp.write(fmt.keepalive())
                    continue
                ev = pending.result()
                out, calls = _render(fmt, ev, calls)
                await resp.write(out)
                if isinstance(ev, Done):
                    break
                pending = asyncio.ensure_future(anext(outputs))
        except RkError as e:
            await resp.write(fmt.error(e))
        finally:
            if not pending.done():  # the client went away: stop reading before the stream is closed
                pending.cancel()
                await asyncio.wait({pending})
        await resp.write_eof()
        return resp
