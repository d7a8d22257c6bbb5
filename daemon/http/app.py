"""The HTTP side: one aiohttp application serving every API family's routes on every listener."""
from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from rk.daemon.http.access import access_log
from rk.daemon.http.family import Family
from rk.daemon.http.middleware import MIDDLEWARES, on_prepare
from rk.daemon.http.wire import FAMILIES, SERVICE, json_response, normalise_path
from rk.daemon.service import Service

__all__ = ["SERVICE", "build_app"]


class NormalisingRouter(web.UrlDispatcher):
    """Routes `/v1//models` and `/api/tags/` as `/v1/models` and `/api/tags`, without a redirect.

    Clients differ in how they follow redirects for POST; matching the clean path is simpler for all.
    """

    async def resolve(self, request: web.Request) -> UrlMappingMatchInfo:
        match = await super().resolve(request)
        clean = normalise_path(request.rel_url.path)
        if match.http_exception is None or clean == request.rel_url.path:
            return match
        retry = await super().resolve(request.clone(rel_url=request.rel_url.with_path(clean)))
        return retry if retry.http_exception is None else match


def build_app(service: Service, families: tuple[Family, ...]) -> web.Application:
    """The app serving `families` (the daemon passes `families.registry.FAMILIES`)."""
    app = web.Application(router=NormalisingRouter(), client_max_size=service.settings.max_body_bytes,
                          middlewares=[access_log, *MIDDLEWARES])
    app[SERVICE] = service
    app[FAMILIES] = families
    app.on_response_prepare.append(on_prepare)
    for fam in families:
        fam.add_routes(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


async def health(request: web.Request) -> web.Response:
    """For balancers' HTTP checks, without a key: 200 while the board can serve, 503 while the runner
    is down or starting or the daemon shuts down."""
    s = request.app[SERVICE].status()
    state = s.state
    body = {"state": state, "queue_depth": s.depth, "running": len(s.running),
            "predicted_wait_s": s.load.predicted_wait_s, "loaded": [m.name for m in s.loaded]}
    if s.runner.down_reason:
        body["reason"] = s.runner.down_reason
    return json_response(body, 503 if state in ("shutting_down", "down", "starting") else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the daemon's counters, gauges and histograms."""
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
