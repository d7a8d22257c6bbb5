"""Reading request bodies and writing JSON replies and errors, in the dialect of the route.

`/v1/*` is OpenAI's dialect; everything else (`/api/*`, `/`) is Ollama's.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import orjson
from aiohttp import web

from rk.daemon.adapters import ollama, openai
from rk.daemon.errors import RkError
from rk.daemon.service import Service

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
Dialect = Literal["openai", "ollama"]
RETRY_AFTER_S = "1"
_SLASHES = re.compile(r"/{2,}")


def normalise_path(path: str) -> str:
    """`//v1//models/` -> `/v1/models` (Open WebUI has sent doubled slashes)."""
    clean = _SLASHES.sub("/", path)
    return clean.rstrip("/") or "/"


def dialect(request: web.Request) -> Dialect:
    return "openai" if normalise_path(request.path).startswith("/v1/") else "ollama"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`application/json; charset=utf-8`; numpy arrays are written natively."""
    body = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8", headers=headers)


def error_response(request: web.Request, status: int, message: str, code: str | None = None,
                   param: str | None = None, retry_after_s: int | None = None) -> web.Response:
    """An error before the first byte: the status code, and the body in the route's own shape."""
    headers = None
    if retry_after_s is not None:
        headers = {"Retry-After": str(retry_after_s)}
    elif code in ("queue_full", "shutting_down"):
        headers = {"Retry-After": RETRY_AFTER_S}
    if dialect(request) == "openai":
        return json_response(openai.error(status, message, code, param), status, headers)
    return json_response(ollama.error(message), status, headers)


def rk_error_response(request: web.Request, e: RkError) -> web.Response:
    return error_response(request, e.status, e.message, e.code, e.param, e.retry_after_s)


# What a web page can send without a CORS preflight (the "simple" content types) is refused from
# pages; `curl -d` sends form-urlencoded and scripts often send no type, and neither sends an Origin.
_JSON_TYPES = ("application/json",)
_NO_ORIGIN_TYPES = ("", "application/x-www-form-urlencoded")


def check_json_type(request: web.Request) -> None:
    """JSON bodies come as application/json (or `+json`); pages may send nothing else.

    A page's `fetch` or `<form>` can POST text/plain, form-urlencoded, multipart or untyped bodies
    without asking first; only application/json needs the preflight the Origin check answers.
    """
    ctype = request.content_type if "Content-Type" in request.headers else ""
    if ctype in _JSON_TYPES or ctype.endswith("+json"):
        return
    if ctype in _NO_ORIGIN_TYPES and "Origin" not in request.headers:
        return
    raise RkError("unsupported_media_type", f"the request body must be JSON sent as Content-Type: application/json, "
                  f"not {ctype or 'untyped'}")


async def read_json(request: web.Request) -> Any:
    """The body as JSON; too large -> 413, too slow -> 408 (and the connection closes), malformed -> 400."""
    settings = request.app[SERVICE].settings
    check_json_type(request)
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RkError("request_too_large", f"the request body is larger than the limit of {limit} bytes")
    try:
        raw = await asyncio.wait_for(request.read(), settings.body_timeout_s)
    except web.HTTPRequestEntityTooLarge:
        raise RkError("request_too_large", f"the request body is larger than the limit of {limit} bytes") from None
    except asyncio.TimeoutError:
        raise RkError("request_timeout", f"the request body did not arrive within {settings.body_timeout_s:g} s "
                      "(RK_BODY_TIMEOUT)") from None
    if not raw.strip():
        raise RkError("bad_request", "missing request body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RkError("bad_request", f"the request body is not valid JSON: {e}") from None
