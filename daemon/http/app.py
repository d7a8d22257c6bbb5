"""The HTTP side: one aiohttp application serving every API family's routes on every listener."""
from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from rk.daemon.http.access import access_log
from rk.daemon.http.family import Family
from rk.daemon.http.middleware import MIDDLEWARES, on_prepare
from rk.daemon.http.wire import FAMILIES, SERVICE, normalise_path
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
    return app


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the daemon's counters, gauges and histograms."""
    body = request.app[SERVICE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
