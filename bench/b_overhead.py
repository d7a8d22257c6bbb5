"""2. Request overhead: round trips of trivial requests, and requests/s at 64 concurrent clients.

Two trivial requests: `version` (pure protocol: parse, route, answer) and a one-token chat on an
unthrottled synthetic model (the whole job path: queue, runner pipe round trip, events, adapter).
rk is timed over the line protocol (Unix), HTTP on its Unix socket and HTTP on TCP; the baseline is
the minimal FastAPI + uvicorn app in bench/baseline_app.py answering the same bodies, on a Unix
socket and on TCP. Round trips use a raw keep-alive HTTP/1.1 client (common.RawHTTP) for both
sides, since httpx's own ~1 ms per request would hide the servers' cost; an httpx `uds=` figure for
`version` goes to the JSON for reference. Load uses aiohttp's client (lighter than
httpx, so the load generator is less of the bottleneck on a small machine) for both sides.
"""
from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Any, Callable

import aiohttp
import httpx
import orjson

from bench.common import (
    Context,
    RawHTTP,
    Row,
    baseline_app,
    chat_line,
    free_port,
    openai_chat,
    pct,
    summary,
    synthetic_daemon,
    timed,
)

CHAT = openai_chat("bench:tiny", "hello there", 1, False)
CONCURRENCY = 64


def http_calls(client: RawHTTP) -> dict[str, Callable[[], Any]]:
    body = orjson.dumps(CHAT)

    def version() -> None:
        status, _ = client.request("GET", "/api/version")
        assert status == 200

    def chat() -> None:
        status, reply = client.request("POST", "/v1/chat/completions", body)
        assert status == 200 and orjson.loads(reply)["choices"][0]["message"]["content"]

    return {"version": version, "chat": chat}


def round_trips(series: dict[str, dict[str, Callable[[], Any]]], n: int, chunk: int = 50) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per call for every (series, op), after a warm-up, interleaved in chunks so that a
    noisy moment on this shared machine hits rk and the baseline alike."""
    out: dict[str, dict[str, list[float]]] = {k: {op: [] for op in ops} for k, ops in series.items()}
    for ops in series.values():
        for fn in ops.values():
            timed(fn, 20)
    for _ in range(max(1, n // chunk)):
        for k, ops in series.items():
            for op, fn in ops.items():
                out[k][op] += timed(fn, chunk)
    return out


def line_calls(d) -> tuple[Any, dict[str, Callable[[], Any]]]:  # type: ignore[no-untyped-def]
    c = d.client(timeout=30)

    def chat() -> None:
        done = c.call("chat", **chat_line("bench:tiny", "hello there", 1))
        assert done["stats"]["generate_tokens"] == 1

    return c, {"version": lambda: c.call("version"), "chat": chat}


async def _load(base_url: str, path: str, body: bytes | None, seconds: float) -> float:
    """Requests/s completed by CONCURRENCY clients looping for `seconds`."""
    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    done = 0
    async with aiohttp.ClientSession(base_url, connector=conn) as s:
        async def one() -> None:
            if body is None:
                async with s.get(path) as r:
                    await r.read()
            else:
                async with s.post(path, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status}")

        async def worker(until: float) -> None:
            nonlocal done
            while time.perf_counter() < until:
                await one()
                done += 1

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(CONCURRENCY)))  # warm
        done = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - t0)


def load(base_url: str, op: str, seconds: float) -> float:
    if op == "version":
        return asyncio.run(_load(base_url, "/api/version", None, seconds))
    return asyncio.run(_load(base_url, "/v1/chat/completions", orjson.dumps(CHAT), seconds))


def run(ctx: Context) -> list[Row]:
    n = ctx.n(1000, 200)
    secs = ctx.n(5.0, 2.0)
    uds, port = ctx.tmp / "baseline.sock", free_port()
    with synthetic_daemon(ctx, "overhead") as d, baseline_app(ctx.tmp, uds=uds), baseline_app(ctx.tmp, port=port), \
            RawHTTP(uds=d.socket) as rk_unix, RawHTTP(port=d.tcp_port) as rk_tcp, \
            RawHTTP(uds=uds) as b_unix, RawHTTP(port=port) as b_tcp:
        c, calls = line_calls(d)
        with c:
            times = round_trips({"line (Unix)": calls, "HTTP (Unix)": http_calls(rk_unix), "HTTP (TCP)": http_calls(rk_tcp),
                                 "base Unix": http_calls(b_unix), "base TCP": http_calls(b_tcp)}, n)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://rk", timeout=30) as h:
            httpx_version = timed(lambda: h.get("/api/version").raise_for_status(), n)
        rk_rps: dict[str, float] = {}
        base_rps: dict[str, float] = {}
        for op in ("version", "chat"):  # alternate, for the same reason as the round trips
            rk_rps[op] = load(d.base_url, op, secs)
            base_rps[op] = load(f"http://127.0.0.1:{port}", op, secs)
    base = {"Unix": times.pop("base Unix"), "TCP": times.pop("base TCP")}
    rk = times
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    ctx.extra["overhead"] = {"rk": {k: {op: summary(v) for op, v in ops.items()} for k, ops in rk.items()},
                             "baseline": {k: {op: summary(v) for op, v in ops.items()} for k, ops in base.items()},
                             "rps": {"rk": rk_rps, "baseline": base_rps, "concurrency": CONCURRENCY},
                             "baseline_http_parser": parser, "httpx_uds_version_ms": summary(httpx_version)}
    rows = []
    what = {"version": "version", "chat": "1-token chat"}
    for op in ("version", "chat"):
        for transport, ts in rk.items():
            against = "Unix" if "Unix" in transport else "TCP"
            for p in (50, 99):
                rows.append(Row("2 overhead", f"{what[op]} p{p}, {transport}", pct(ts[op], p),
                                pct(base[against][op], p), "ms", f"FastAPI+uvicorn HTTP ({against})"))
    for op in ("version", "chat"):
        rows.append(Row("2 overhead", f"{what[op]} req/s, {CONCURRENCY} clients (TCP)", rk_rps[op], base_rps[op],
                        "req/s", f"FastAPI+uvicorn ({parser})",
                        note="rk runs jobs one at a time" if op == "chat" else ""))
    return rows
