"""Anthropic routes (`/v1/messages`, `/v1/messages/count_tokens`): parse with the anthropic adapter, run through
the one queue, reply in Anthropic's shapes; streams open when the job is accepted and `ping` while it waits."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families.anthropic import adapter as anthropic
from rk.daemon.http.family import Family, api_key_or_bearer
from rk.daemon.http.streaming import SSE_HEADERS, JobStream, peer, sse_event
from rk.daemon.http.wire import json_response, named_manifest, read_json
from rk.daemon.jobs import JobStats, ToolCall

STATUSES = {"queue_full": 529}  # Anthropic's "overloaded"; its SDKs retry it


def _sse(events: list[anthropic.Event]) -> bytes:
    return b"".join(sse_event(data, event=name) for name, data in events)


class MessagesFormat:
    """Anthropic's named events, from `message_start` (sent when the job is accepted) to `message_stop`."""

    headers = SSE_HEADERS

    def __init__(self, model: str) -> None:
        self.events = anthropic.MessageStream(model)

    def opening(self) -> bytes:
        return _sse(self.events.start())

    def keepalive(self) -> bytes:
        return _sse([self.events.ping()])

    def token(self, text: str) -> bytes:
        return _sse(self.events.text(text))

    def thinking(self, text: str) -> bytes:
        return _sse(self.events.thinking(text))

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return _sse(self.events.tool_call(call))

    def done(self, stats: JobStats, called: bool) -> bytes:
        return _sse(self.events.done(stats, called))

    def error(self, e: RkError) -> bytes:
        return _sse(self.events.error(e, STATUSES.get(e.code, e.status)))


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req = anthropic.parse_messages(body, peer(request), named_manifest(request, body))
    async with JobStream(request, req.job) as js:
        if req.stream:
            return await js.relay_early(request, MessagesFormat(req.model))
        gen = await js.generated()
    return json_response(anthropic.message(anthropic.message_id(), req.model, gen))


async def count_tokens(request: web.Request) -> web.Response:
    """The prompt's tokens with the model's own template and tokenizer, through the queue (the runner holds them)."""
    body = await read_json(request)
    req = anthropic.parse_messages(body, peer(request), named_manifest(request, body), count=True)
    async with JobStream(request, req.job) as js:
        stats = await js.done()
    return json_response(anthropic.count(stats))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)


FAMILY = Family("anthropic", ("/v1/messages",), add_routes, anthropic.error, read_key=api_key_or_bearer,
                key_hint="x-api-key: KEY", statuses=STATUSES,
                cors_headers=("x-api-key", "anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access"))
