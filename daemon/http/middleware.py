"""Cross-cutting HTTP concerns: request ids, errors in the route's dialect, CORS, and the API key on TCP."""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import uuid
from typing import Awaitable, Callable

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.http.wire import SERVICE, error_response, normalise_path, rk_error_response

log = logging.getLogger("rk.daemon.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Like OLLAMA_ORIGINS' defaults: local pages and desktop app shells may call the API; add more with RK_ORIGINS.
LOCAL_ORIGINS = ("http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
                 "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
                 "http://[::1]", "http://[::1]:*", "app://*", "file://*", "tauri://*", "vscode-webview://*")
ALLOW_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Request-Id, X-Requested-With, OpenAI-Organization"


def is_tcp(request: web.Request) -> bool:
    """A TCP connection's socket name is a (host, port) tuple; a Unix socket's is a path."""
    return isinstance(request.transport.get_extra_info("sockname") if request.transport else None, tuple)


def origin_allowed(origin: str, configured: str) -> bool:
    patterns = list(LOCAL_ORIGINS) + [p.strip() for p in configured.split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(origin, p) for p in patterns)


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The client's X-Request-Id, or a new one; `on_prepare` puts it on every response.

    Being here also means a whole request head arrived, which meets the connection's head deadline.
    """
    request.app[SERVICE].head_deadlines.met(request.transport)
    request["request_id"] = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure before the first byte becomes a status code with a body in the route's own shape."""
    try:
        return await handler(request)
    except RkError as e:
        return rk_error_response(request, e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = f"{e.reason}: {request.method} {request.path}" if e.status in (404, 405) else (e.text or e.reason)
        return error_response(request, e.status, message)
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client went away; there is no one to answer
    except Exception as e:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return rk_error_response(request, RkError("internal", f"internal error: {e}"))


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a browser's preflight for allowed origins; others get 403 (`on_prepare` adds the normal headers)."""
    origin = request.headers.get("Origin")
    if request.method != "OPTIONS" or not origin or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    if not origin_allowed(origin, request.app[SERVICE].settings.cors_origins):
        return error_response(request, 403, f"origin {origin} is not allowed (set RK_ORIGINS)")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers") or ALLOW_HEADERS,
        "Access-Control-Max-Age": "600",
    })


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On TCP with a key configured, `Authorization: Bearer KEY` is required (constant-time compare).

    `GET /` stays open so load balancers can probe health; the Unix socket relies on its file mode.
    """
    svc = request.app[SERVICE]
    if svc.settings.api_key and is_tcp(request) and normalise_path(request.path) != "/":
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not svc.key_ok(token.strip()):
            raise RkError("unauthorized", "missing or wrong API key: send Authorization: Bearer KEY")
    return await handler(request)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response gets, streamed ones included: the request id, and CORS for allowed origins."""
    response.headers["X-Request-Id"] = request.get("request_id") or uuid.uuid4().hex
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin, request.app[SERVICE].settings.cors_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
        response.headers.add("Vary", "Origin")


MIDDLEWARES = [request_id, errors, cors_preflight, api_key]
