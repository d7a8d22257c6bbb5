"""OpenAI routes (`/v1/*`): parse with the openai adapter, run through the one queue, reply in its shapes."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families.openai import adapter as openai
from rk.daemon.http.family import Family, api_key_or_bearer
from rk.daemon.http.streaming import SSE_DONE, SSE_HEADERS, JobStream, peer, sse_event
from rk.daemon.http.wire import SERVICE, json_response, read_json
from rk.daemon.jobs import JobStats, ToolCall
from rk.daemon.store.models import modified_at
from rk.daemon.vectors import cut


class SseFormat:
    """Chat or text completion chunks as SSE: role-only first chunk, reason only on the last, then [DONE]."""

    headers = SSE_HEADERS

    def __init__(self, req: openai.GenRequest) -> None:
        self.req = req
        self.reply = openai.new_reply(req.model, chat=req.job.spec.prompt is None)

    def opening(self) -> bytes:
        r, usage = self.reply, self.req.include_usage
        if r.chat:
            return sse_event(openai.chunk(r, None, first=True, include_usage=usage))
        return sse_event(openai.chunk(r, self.req.echo, include_usage=usage)) if self.req.echo else b""

    def token(self, text: str) -> bytes:
        return sse_event(openai.chunk(self.reply, text, include_usage=self.req.include_usage))

    def thinking(self, text: str) -> bytes:
        return sse_event(openai.chunk(self.reply, None, thinking=text, include_usage=self.req.include_usage))

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return sse_event(openai.chunk(self.reply, None, call=openai.tool_call(call, index),
                                      include_usage=self.req.include_usage))

    def done(self, stats: JobStats, called: bool) -> bytes:
        out = sse_event(openai.chunk(self.reply, None, finish=openai.finish_reason(stats, called),
                                     include_usage=self.req.include_usage))
        if self.req.include_usage:
            out += sse_event(openai.usage_chunk(self.reply, stats))
        return out + SSE_DONE

    def error(self, e: RkError) -> bytes:
        return sse_event(openai.rk_error(e))


async def _generate(request: web.Request, req: openai.GenRequest) -> web.StreamResponse:
    async with JobStream(request, req.job) as js:
        if req.stream:
            return await js.relay(request, SseFormat(req))
        gen = await js.generated()
    reply = openai.new_reply(req.model, chat=req.job.spec.prompt is None)
    return json_response(openai.completion(reply, gen, req.echo))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, openai.parse_chat(await read_json(request), peer(request)))


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, openai.parse_completion(await read_json(request), peer(request)))


async def embeddings(request: web.Request) -> web.Response:
    req = openai.parse_embeddings(await read_json(request), peer(request))
    async with JobStream(request, req.job) as js:
        matrix, stats = await js.vectors()
    return json_response(openai.embeddings(req, cut(matrix, req.dimensions), stats.prompt_tokens))


async def list_models(request: web.Request) -> web.Response:
    store = request.app[SERVICE].store
    return json_response(openai.model_list([openai.model_object(m, modified_at(m)) for m in store.list()]))


async def get_model(request: web.Request) -> web.Response:
    """`/v1/models/{id}`: ids hold ':' and may hold '/'; a malformed id is simply not found."""
    name = request.match_info["id"].rstrip("/")
    try:
        m = request.app[SERVICE].store.get(name)
    except RkError as e:
        if e.code != "bad_request":
            raise
        raise RkError("model_not_found", f"The model `{name}` does not exist", param="model") from None
    return json_response(openai.model_object(m, modified_at(m)))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{id:.+}", get_model)


FAMILY = Family("openai", ("/v1/",), add_routes, openai.error, read_key=api_key_or_bearer,  # x-api-key: Claude Code's /v1/models
                cors_headers=("OpenAI-Organization", "OpenAI-Project"))
