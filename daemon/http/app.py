"""The HTTP side: one aiohttp application serving the Ollama and OpenAI routes on every listener."""
from __future__ import annotations

import logging
import uuid
from typing import Awaitable, Callable

from aiohttp import web

from rk.daemon.service import Service

log = logging.getLogger("rk.daemon.http")
SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response carries X-Request-Id: the client's own, or a new one."""
    rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request["request_id"] = rid
    resp = await handler(request)
    if not resp.prepared:
        resp.headers["X-Request-Id"] = rid
    return resp


def is_tcp(request: web.Request) -> bool:
    return isinstance(request.transport.get_extra_info("sockname") if request.transport else None, tuple)


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running", content_type="text/plain")


def build_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=service.settings.max_body_bytes, middlewares=[request_id])
    app[SERVICE] = service
    app.router.add_route("GET", "/", root)
    app.router.add_route("GET", "/api/version", version)
    return app


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[SERVICE].version})
