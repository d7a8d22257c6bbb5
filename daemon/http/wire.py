"""Reading request bodies and writing JSON replies and errors, in the shape of the family that owns the route."""
from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.http.family import Family, family_for
from rk.daemon.service import Service
from rk.daemon.store.models import Manifest

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
FAMILIES: web.AppKey[tuple[Family, ...]] = web.AppKey("families", tuple)
RETRY_AFTER_S = "1"
_SLASHES = re.compile(r"/{2,}")


def normalise_path(path: str) -> str:
    """`//v1//models/` -> `/v1/models` (Open WebUI has sent doubled slashes)."""
    clean = _SLASHES.sub("/", path)
    return clean.rstrip("/") or "/"


def family(request: web.Request) -> Family:
    """The API family that owns the request's path (its errors, its key header)."""
    return family_for(request.app[FAMILIES], normalise_path(request.path))


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
    return json_response(family(request).error_body(status, message, code, param), status, headers)


def rk_error_response(request: web.Request, e: RkError) -> web.Response:
    return error_response(request, family(request).status(e.code, e.status), e.message, e.code, e.param,
                          e.retry_after_s)


# What a web page can send without a CORS preflight (the CORS-safelisted content types, or none):
# refused when the request carries an `Origin`, as every browser POST does. Any other type needs a
# preflight, which the Origin check answers; without an Origin the client is not a browser, and its
# body is read as JSON whatever it is labelled (LiteLLM sends application/octet-stream, curl -d form data).
_SIMPLE_TYPES = ("", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def check_json_type(request: web.Request) -> None:
    """Refuse a body a web page could have posted without asking first; anything else is parsed as JSON."""
    ctype = request.content_type if "Content-Type" in request.headers else ""
    if ctype in _SIMPLE_TYPES and "Origin" in request.headers:
        raise RkError("unsupported_media_type", "a request from a web page must send its JSON body as "
                      f"Content-Type: application/json, not {ctype or 'untyped'}")


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


def named_manifest(request: web.Request, body: Any) -> Manifest | None:
    """The manifest of the model a request body names, for what the request may ask of it (a family relaxes
    thinking for a model that cannot think); None when there is none, and the queue answers the 404."""
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str):
        return None
    try:
        return request.app[SERVICE].store.get(name)
    except RkError:
        return None
