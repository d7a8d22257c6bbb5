"""Anthropic routes (`/v1/messages`, `/v1/messages/count_tokens`): parse with the anthropic adapter, run through
the one queue, reply in Anthropic's shapes; streams open when the job is accepted and `ping` while it waits."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.families.anthropic import adapter as anthropic
from rk.daemon.http.family import Family, api_key_or_bearer
from rk.daemon.http.streaming import JobStream, NamedEvents, peer
from rk.daemon.http.wire import json_response, named_manifest, read_json


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req = anthropic.parse_messages(body, peer(request), named_manifest(request, body))
    async with JobStream(request, req.job) as js:
        if req.stream:
            return await js.relay_early(request, NamedEvents(anthropic.MessageStream(req.model)))
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
                key_hint="x-api-key: KEY", statuses=anthropic.STATUSES,
                cors_headers=("x-api-key", "anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access"))
