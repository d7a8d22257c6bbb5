"""Ollama metadata and model-store routes: answered at once, never behind the job queue."""
from __future__ import annotations

import asyncio
import contextlib
import math

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.families.ollama import adapter as ollama
from rk.daemon.http.streaming import NDJSON_HEADERS, ndjson_line
from rk.daemon.http.wire import SERVICE, json_response, read_json
from rk.daemon.store import modelfile
from rk.daemon.store.models import modified_at
from rk.daemon.store.pull.blobs import Blobs
from rk.daemon.store.pull.create import create as create_model
from rk.daemon.store.pull.manager import SUCCESS
from rk.daemon.store.pull.refs import Digest

STATUS_SUCCESS = {"status": "success"}


async def root(request: web.Request) -> web.Response:
    """Health probes compare the body exactly: no newline."""
    return web.Response(text="Ollama is running", content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    return json_response(ollama.version(request.app[SERVICE].version))


async def tags(request: web.Request) -> web.Response:
    store = request.app[SERVICE].store
    return json_response({"models": [ollama.tag(m, modified_at(m)) for m in store.list()]})


async def ps(request: web.Request) -> web.Response:
    """Loaded models with their measured memory and the wall-clock time their keep-alive ends."""
    svc = request.app[SERVICE]
    models = []
    for res in svc.status().loaded:
        try:
            m = svc.store.get(res.name)
        except RkError:
            continue  # deleted while loaded
        models.append(ollama.ps_entry(m, res.memory_mb, math.inf if res.expires_at is None else res.expires_at, res.num_ctx))
    return json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    m = request.app[SERVICE].store.get(ollama.model_name(f.obj(body)))
    return json_response(ollama.show(m, modified_at(m)))


async def copy(request: web.Request) -> web.Response:
    src, dst = ollama.parse_copy(await read_json(request))
    await asyncio.to_thread(request.app[SERVICE].store.copy, src, dst)  # a whole model directory: off the loop
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    """The model, and the blobs it held that no other model uses."""
    svc = request.app[SERVICE]
    m = svc.store.get(ollama.model_name(f.obj(await read_json(request))))
    held = Blobs.inodes(m.dir)
    await asyncio.to_thread(svc.store.delete, m.name)
    await asyncio.to_thread(svc.pulls.blobs.prune, held)
    return web.Response(status=200)


async def create(request: web.Request) -> web.StreamResponse:
    """A model from uploaded blobs or from an existing model (structured fields or a legacy `modelfile`)."""
    spec = ollama.parse_create(await read_json(request))
    svc = request.app[SERVICE]
    statuses = await create_model(svc.store, svc.pulls.blobs, spec)
    return await _status_reply(request, spec.stream, statuses)


def _blob_digest(request: web.Request) -> Digest:
    return Digest("sha256", modelfile.digest_hex(request.match_info["digest"]))


async def blob_head(request: web.Request) -> web.Response:
    """200 if the daemon holds the blob (a client then skips the upload), else 404."""
    found = request.app[SERVICE].pulls.blobs.has(_blob_digest(request))
    return web.Response(status=200 if found else 404)


async def blob_upload(request: web.Request) -> web.Response:
    """Store the body as a blob, refused unless it hashes to the digest in the path."""
    digest = _blob_digest(request)
    blobs = request.app[SERVICE].pulls.blobs
    if not blobs.has(digest):
        await blobs.ingest(request.content.iter_chunked(1 << 20), digest, request.content_length)
    return web.Response(status=201)


async def pull(request: web.Request) -> web.StreamResponse:
    """A hub model, streamed as Ollama's statuses; an error after the first line is an `{"error"}` line."""
    body = f.obj(await read_json(request))
    name = ollama.model_name(body)
    pulls = request.app[SERVICE].pulls
    async with contextlib.aclosing(pulls.follow(name)) as events:
        # The first byte waits for the hub's listing, so a bad name or an unknown repo is a proper status code.
        held = [await anext(events), await anext(events)]
        if body.get("stream") is False:
            async for _ in events:
                pass
            return json_response(SUCCESS.wire())
        resp = web.StreamResponse(headers=NDJSON_HEADERS)
        await resp.prepare(request)
        await resp.write(b"".join(ndjson_line(ev.wire()) for ev in held))
        try:
            async for ev in events:
                await resp.write(ndjson_line(ev.wire()))
        except RkError as e:
            await resp.write(ndjson_line(ollama.error(e.message)))
        await resp.write_eof()
        return resp


async def _status_reply(request: web.Request, stream: bool, steps: list[str]) -> web.StreamResponse:
    """Ollama's status stream, ending in `success` (ollama-js needs that line); one object without stream."""
    if not stream:
        return json_response(STATUS_SUCCESS)
    resp = web.StreamResponse(headers=NDJSON_HEADERS)
    await resp.prepare(request)
    await resp.write(b"".join(ndjson_line({"status": s}) for s in steps) + ndjson_line(STATUS_SUCCESS))
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/copy", copy)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/create", create)
    app.router.add_post("/api/pull", pull)
    app.router.add_route("HEAD", "/api/blobs/{digest}", blob_head)
    app.router.add_post("/api/blobs/{digest}", blob_upload)
