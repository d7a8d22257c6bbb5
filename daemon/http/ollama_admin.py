"""Ollama metadata and model-store routes: answered at once, never behind the job queue."""
from __future__ import annotations

import contextlib

from aiohttp import web

from rk.daemon.adapters import fields as f
from rk.daemon.adapters import ollama
from rk.daemon.errors import RkError
from rk.daemon.http.streaming import NDJSON_HEADERS, ndjson_line
from rk.daemon.http.wire import SERVICE, json_response, read_json
from rk.daemon.models import Manifest, modified_at, normalize_name
from rk.daemon.pull.blobs import Blobs
from rk.daemon.pull.manager import SUCCESS

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
    for name, res in list(svc.scheduler.loaded.items()):
        try:
            m = svc.store.get(name)
        except RkError:
            continue  # deleted while loaded
        models.append(ollama.ps_entry(m, res.memory_mb, res.wall_expires))
    return json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    m = request.app[SERVICE].store.get(ollama.model_name(f.obj(body)))
    return json_response(ollama.show(m, modified_at(m)))


async def copy(request: web.Request) -> web.Response:
    src, dst = ollama.parse_copy(await read_json(request))
    request.app[SERVICE].store.copy(src, dst)
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    """The model, and the blobs it held that no other model uses."""
    svc = request.app[SERVICE]
    m = svc.store.get(ollama.model_name(f.obj(await read_json(request))))
    held = Blobs.inodes(m.dir)
    svc.store.delete(m.name)
    svc.pulls.blobs.prune(held)
    return web.Response(status=200)


async def create(request: web.Request) -> web.StreamResponse:
    """A new model from an existing one, with its own system prompt and default parameters."""
    req = ollama.parse_create(await read_json(request))
    store = request.app[SERVICE].store
    base = store.get(req.base)
    target = normalize_name(req.model)
    if target != base.name:
        try:
            store.delete(target)  # re-creating a name replaces it, as Ollama does
        except RkError as e:
            if e.code != "model_not_found":
                raise
        store.copy(base.name, target)
    m: Manifest = store.get(target)
    if req.system is not None:
        m.system = req.system
    m.defaults = {**m.defaults, **req.defaults}
    store.save(m)
    return await _status_reply(request, req.stream, ["using existing layers", "writing manifest"])


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
