"""OpenAI Responses route (`/v1/responses`): parse with the responses adapter, run through the one queue, reply
as Response objects; streams open when the job is accepted and repeat `response.in_progress` while it waits."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.families.responses import adapter as responses
from rk.daemon.http.family import Family
from rk.daemon.http.streaming import JobStream, NamedEvents, peer
from rk.daemon.http.wire import json_response, named_manifest, read_json

STORE: web.AppKey[responses.ResponseStore] = web.AppKey("responses", responses.ResponseStore)


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    store = request.app[STORE]
    req = responses.parse(body, peer(request), named_manifest(request, body), store)
    reply = responses.Reply(req.model, req.echo)
    async with JobStream(request, req.job) as js:
        if req.stream:
            events = responses.ResponseEvents(reply)
            resp = await js.relay_early(request, NamedEvents(events))
            output = events.output if events.finished else None
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
