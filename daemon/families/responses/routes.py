"""OpenAI Responses route (`/v1/responses`): parse with the responses adapter, run through the one queue, reply
as Response objects; streams open when the job is accepted and send SSE comments while it waits."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families.responses import adapter as responses
from rk.daemon.http.family import Family
from rk.daemon.http.streaming import SSE_HEADERS, JobStream, peer, sse_event
from rk.daemon.http.wire import json_response, named_manifest, read_json
from rk.daemon.jobs import JobStats, ToolCall

STORE: web.AppKey[responses.ResponseStore] = web.AppKey("responses", responses.ResponseStore)
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: every parser skips it (Responses has no ping event)


def _sse(events: list[responses.Event]) -> bytes:
    return b"".join(sse_event(ev, event=ev["type"]) for ev in events)


class ResponsesFormat:
    """Responses' numbered events, from `response.created` (sent when the job is accepted) to `response.completed`."""

    headers = SSE_HEADERS

    def __init__(self, reply: responses.Reply) -> None:
        self.events = responses.ResponseEvents(reply)

    def opening(self) -> bytes:
        return _sse(self.events.start())

    def keepalive(self) -> bytes:
        return KEEPALIVE

    def token(self, text: str) -> bytes:
        return _sse(self.events.text(text))

    def thinking(self, text: str) -> bytes:
        return _sse(self.events.thinking(text))

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return _sse(self.events.tool_call(call))

    def done(self, stats: JobStats, called: bool) -> bytes:
        return _sse(self.events.done(stats))

    def error(self, e: RkError) -> bytes:
        return _sse(self.events.failed(e))


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    store = request.app[STORE]
    req = responses.parse(body, peer(request), named_manifest(request, body), store)
    reply = responses.Reply(req.model, req.echo)
    async with JobStream(request, req.job) as js:
        if req.stream:
            fmt = ResponsesFormat(reply)
            resp = await js.relay_early(request, fmt)
            output = fmt.events.output if fmt.events.finished else None
        else:
            final = reply.final(await js.generated())
            resp, output = json_response(final), final["output"]
    if req.store and output is not None:
        store.put(reply.id, req.conversation + (responses.assistant_turn(output),))
    return resp


def add_routes(app: web.Application) -> None:
    app[STORE] = responses.ResponseStore()
    app.router.add_post("/v1/responses", create)


FAMILY = Family("responses", ("/v1/responses",), add_routes, responses.error)
