"""Cross-cutting HTTP concerns: request ids, errors in the route's family's shape, browser checks, CORS, the API key on TCP."""
from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import logging
import socket
import sys
import uuid
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from rk.daemon.errors import RkError
from rk.daemon.http.wire import FAMILIES, SERVICE, error_response, family, normalise_path, rk_error_response
from rk.daemon.settings import Settings, parse_hostport

log = logging.getLogger("rk.daemon.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Like OLLAMA_ORIGINS' defaults: local pages and desktop app shells may call the API; add more with RK_ORIGINS.
LOCAL_ORIGINS = ("http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
                 "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
                 "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
                 "http://[::1]", "http://[::1]:*", "app://*", "file://*", "tauri://*", "vscode-webview://*")
ALLOW_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
ALLOW_HEADERS = ("Authorization", "Content-Type", "User-Agent", "Accept", "X-Request-Id", "X-Requested-With")


def is_tcp(request: web.Request) -> bool:
    """A TCP connection's socket name is a (host, port) tuple; a Unix socket's is a path."""
    return isinstance(request.transport.get_extra_info("sockname") if request.transport else None, tuple)


def _patterns(configured: str) -> list[str]:
    return [p.strip().lower() for p in configured.split(",") if p.strip()]


def origin_allowed(origin: str, configured: str) -> bool:
    return any(fnmatch.fnmatchcase(origin.lower(), p) for p in [*LOCAL_ORIGINS, *_patterns(configured)])


def host_name(host_header: str) -> str:
    """The name in a Host header, without port or brackets: `[::1]:80` -> `::1`, `Box.:80` -> `box`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return (name if sep and port.isdigit() else host).rstrip(".")


def host_allowed(host_header: str, settings: Settings) -> bool:
    """Names a browser may reach us by without DNS rebinding: an IP address (no name to rebind),
    localhost, this machine's name, the name we were bound to, and RK_HOSTS."""
    host = host_name(host_header)
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    me = socket.gethostname().lower()
    bound = parse_hostport(settings.tcp)[0].lower() if settings.tcp else ""
    return host in (me, f"{me}.local", bound) or any(fnmatch.fnmatchcase(host, p) for p in _patterns(settings.hosts))


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
        if e.code == "request_timeout":
            return await hang_up_after(request, rk_error_response(request, e))
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


async def hang_up_after(request: web.Request, resp: web.Response) -> web.Response:
    """Send the answer, then close at once: the rest of a stalled body may never come, and aiohttp
    would otherwise linger 10 s more reading it."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()  # the transport flushes the reply before it closes
    return resp


@web.middleware
async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what a foreign web page could make a browser send, on every request, not only preflights.

    Browsers send `Origin` with every cross-site and every non-GET request, so a page not in the
    allowed origins is refused whatever the method. A DNS-rebinding page is same-origin for its
    browser but must use its own name in `Host`; on keyless TCP only known names are served (with a
    key, a page cannot authenticate anyway, and the Unix socket is reached only through proxies).
    """
    settings = request.app[SERVICE].settings
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, settings.cors_origins):
        raise RkError("forbidden", f"origin {origin} is not allowed (set RK_ORIGINS)")
    host = request.headers.get("Host", "")
    if is_tcp(request) and not settings.api_key and not host_allowed(host, settings):
        raise RkError("forbidden", f"host {host_name(host)!r} is not allowed (add it to RK_HOSTS)")
    return await handler(request)


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a browser's preflight (its origin already passed `browser_guard`); `on_prepare` adds the rest."""
    if request.method != "OPTIONS" or "Origin" not in request.headers \
            or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers") or ", ".join(
            dict.fromkeys([*ALLOW_HEADERS, *(h for fam in request.app[FAMILIES] for h in fam.cors_headers)])),
        "Access-Control-Max-Age": "600",
    })


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On TCP with a key configured, the key is required, read as the route's family sends it
    (constant-time compare).

    `GET /` and `/health` stay open so load balancers can probe health, and `/metrics` with
    RK_METRICS_PUBLIC (scrapers cannot send a key); the Unix socket relies on its file mode.
    """
    svc = request.app[SERVICE]
    path = normalise_path(request.path)
    open_paths = ("/", "/health", "/metrics") if svc.settings.metrics_public else ("/", "/health")
    if svc.settings.api_key and is_tcp(request) and path not in open_paths:
        fam = family(request)
        token = fam.read_key(request.headers)
        if token is None or not svc.key_ok(token):
            raise RkError("unauthorized", f"missing or wrong API key: send {fam.key_hint}")
    return await handler(request)


class OneLineErrors(logging.LoggerAdapter):
    """aiohttp's protocol logger: a malformed request is a stranger's mistake, worth one line, not a
    traceback; anything else aiohttp reports keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: object) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            text = " ".join(str(exc).split())[:200]
            self.logger.info("%s: %s %s", str(msg) % args, type(exc).__name__, text)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kw)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response gets, streamed ones included: the request id, and CORS for allowed origins."""
    response.headers["X-Request-Id"] = request.get("request_id") or uuid.uuid4().hex
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin, request.app[SERVICE].settings.cors_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After"
        response.headers.add("Vary", "Origin")


MIDDLEWARES = [request_id, errors, browser_guard, cors_preflight, api_key]
