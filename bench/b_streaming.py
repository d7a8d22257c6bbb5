"""1. Streaming overhead: tokens/s a client sees ÷ tokens/s of the same synthetic backend alone, in-process.

The synthetic backend paces tokens to absolute deadlines, so a client that keeps up sees the
backend's rate exactly; anything the daemon, runner pipe or protocol cannot sustain shows as a ratio
below 1. The clock runs from sending the request to the last token, so queueing and set-up count too.
A second measure, the unthrottled backend, gives the pipeline's ceiling (headroom over 2,000 tokens/s).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import orjson

from rk.daemon.backends.base import RunnerConfig
from rk.daemon.backends.synthetic import SyntheticModel
from rk.daemon.jobs import GenOptions, GenSpec, Message
from rk.daemon.store.models import Manifest

from bench.common import STREAM_RATE, Context, Row, chat_line, median, openai_chat, synthetic_daemon

PROMPT = "alpha beta gamma delta epsilon zeta eta theta"


class _Null:
    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None:
        pass

    def token(self, text: str) -> None:
        pass


def backend_alone(rate: float, n: int) -> float:
    """Tokens/s of SyntheticModel.generate with a sink that does nothing."""
    m = SyntheticModel(Manifest(name="bench:alone", backend="synthetic", context_length=8192,
                                params={"tokens_per_s": rate, "reply_tokens": 1_000_000}, dir=Path(".")), RunnerConfig())
    req = GenSpec(messages=(Message("user", PROMPT),), options=GenOptions(max_tokens=n))
    t0 = time.perf_counter()
    r = m.generate(req, _Null(), threading.Event())
    return r.generate_tokens / (time.perf_counter() - t0)


def line_rate(d, model: str, n: int) -> float:  # type: ignore[no-untyped-def]
    """Tokens/s over the line protocol (Unix socket), counting token events."""
    with d.client(timeout=120) as c:
        t0 = time.perf_counter()
        rid = c.send("chat", **chat_line(model, PROMPT, n))
        got = 0
        for ev in c.events(rid):
            if ev["ev"] == "token":
                got += 1
                t_last = time.perf_counter()
    assert got == n, f"expected {n} tokens, got {got}"
    return got / (t_last - t0)


def sse_rate(base_url: str, model: str, n: int) -> float:
    """Tokens/s over HTTP SSE (/v1/chat/completions, stream: true, TCP), counting content chunks."""
    got = 0
    with httpx.Client(base_url=base_url, timeout=120) as http:
        t0 = time.perf_counter()
        with http.stream("POST", "/v1/chat/completions", json=openai_chat(model, PROMPT, n, True)) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    delta = orjson.loads(line[6:])["choices"]
                    if delta and delta[0]["delta"].get("content"):
                        got += 1
                        t_last = time.perf_counter()
    assert got == n, f"expected {n} tokens, got {got}"
    return got / (t_last - t0)


def run(ctx: Context) -> list[Row]:
    n = ctx.n(4000, 1000)
    reps = ctx.n(3, 1)
    alone = median([backend_alone(STREAM_RATE, n) for _ in range(reps)])
    ceiling_alone = backend_alone(1e12, 20 * n)
    with synthetic_daemon(ctx, "streaming") as d:
        line_rate(d, "bench:stream", 10)  # warm: runner loaded, connections set up
        line = median([line_rate(d, "bench:stream", n) for _ in range(reps)])
        sse = median([sse_rate(d.base_url, "bench:stream", n) for _ in range(reps)])
        line_cap = median([line_rate(d, "bench:ceiling", 5 * n) for _ in range(reps)])
        sse_cap = median([sse_rate(d.base_url, "bench:ceiling", 5 * n) for _ in range(reps)])
    ctx.extra["streaming"] = {"tokens": n, "backend_alone": alone, "line": line, "sse": sse,
                              "ceiling_backend_alone": ceiling_alone, "ceiling_line": line_cap, "ceiling_sse": sse_cap}
    base = "synthetic backend alone, in-process"
    return [
        Row("1 streaming", "line protocol (Unix) tokens/s", line, alone, "tokens/s", base, target=">= 0.98"),
        Row("1 streaming", "HTTP SSE /v1 (TCP) tokens/s", sse, alone, "tokens/s", base, target=">= 0.98"),
        Row("1 streaming", "ceiling, line protocol", line_cap, STREAM_RATE, "tokens/s", "2,000 tokens/s",
            note="unthrottled backend; ratio = headroom"),
        Row("1 streaming", "ceiling, HTTP SSE", sse_cap, STREAM_RATE, "tokens/s", "2,000 tokens/s",
            note="unthrottled backend; ratio = headroom"),
    ]
