"""Ollama job routes (`/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`) through the one queue."""
from __future__ import annotations

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families.ollama import adapter as ollama
from rk.daemon.families.ollama import admin
from rk.daemon.http.family import Family
from rk.daemon.http.streaming import NDJSON_HEADERS, JobStream, ndjson_line, peer
from rk.daemon.http.wire import json_response, read_json
from rk.daemon.jobs import JobStats, ModelAction, ToolCall
from rk.daemon.vectors import cut


class NdjsonFormat:
    """Token chunks as NDJSON, ending with exactly one `done: true` line or an `{"error": ...}` line."""

    headers = NDJSON_HEADERS

    def __init__(self, req: ollama.GenRequest) -> None:
        self.req = req

    def opening(self) -> bytes:
        return b""

    def token(self, text: str) -> bytes:
        return ndjson_line(ollama.chunk(self.req.model, text, chat=self.req.chat))

    def thinking(self, text: str) -> bytes:
        return ndjson_line(ollama.chunk(self.req.model, "", chat=self.req.chat, thinking=text))

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return ndjson_line(ollama.chunk(self.req.model, "", chat=self.req.chat, calls=(call,), first_index=index))

    def done(self, stats: JobStats, called: bool) -> bytes:
        return ndjson_line(ollama.final(self.req.model, stats, chat=self.req.chat))

    def error(self, e: RkError) -> bytes:
        return ndjson_line(ollama.error(e.message))


async def _generate(request: web.Request, req: ollama.GenRequest) -> web.StreamResponse:
    """Generation, or load/unload: the latter is one JSON object even though `stream` defaults to true."""
    async with JobStream(request, req.job) as js:
        if isinstance(req.job, ModelAction):
            await js.done()
            return json_response(ollama.action_reply(req.model, req.job.action, chat=req.chat))
        if req.stream:
            return await js.relay(request, NdjsonFormat(req))
        gen = await js.generated()
    return json_response(ollama.final(req.model, gen.stats, chat=req.chat, gen=gen))


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generate(request, ollama.parse_generate(await read_json(request), peer(request)))


async def chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, ollama.parse_chat(await read_json(request), peer(request)))


async def embed(request: web.Request) -> web.Response:
    req = ollama.parse_embed(await read_json(request), peer(request))
    async with JobStream(request, req.job) as js:
        if isinstance(req.job, ModelAction):
            await js.done()
            return json_response({"model": req.model, "embeddings": []})
        matrix, stats = await js.vectors()
    return json_response(ollama.embed_reply(req.model, cut(matrix, req.dimensions), stats))


async def embeddings(request: web.Request) -> web.Response:
    req = ollama.parse_legacy_embeddings(await read_json(request), peer(request))
    async with JobStream(request, req.job) as js:
        matrix, _ = await js.vectors()
    return json_response(ollama.legacy_embedding(matrix))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    admin.add_routes(app)


def error_body(status: int, message: str, code: str | None, param: str | None) -> dict[str, str]:
    """Ollama's errors are one string; the status code carries the rest."""
    return ollama.error(message)


FAMILY = Family("ollama", ("/",), add_routes, error_body)
