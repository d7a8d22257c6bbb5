"""The HTTP access log: the outermost middleware, so it sees every request's final status and size."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from aiohttp import web

from rk.daemon import accesslog
from rk.daemon.http.streaming import peer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_GONE = 499  # nginx's code for a request whose client went away


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    status, nbytes = 500, 0
    try:
        resp = await handler(request)
        status, nbytes = resp.status, resp.body_length
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        accesslog.http(peer(request), request.method, request.path, status, nbytes,
                       (time.perf_counter() - t0) * 1000, request.get("request_id", ""))
