"""7. Decode speed of the bundled chat model through the daemon ÷ the same model in-process (issue 2's figure).

rk: a greedy 64-token line-protocol chat on smollm2:135m; the backend's own tokens/s (from `done`) and
the tokens/s the client sees (first token to `done`). Baseline: the same backend class, weights and
thread count loaded in this process, with no daemon, runner process or socket in between. Runs
alternate so noise hits both alike; prefix reuse is off so every run does the same work.
"""
from __future__ import annotations

import threading
from typing import Callable
import time

from bench.common import MODELS, Context, Row, daemon, torch_threads

CHAT_MODEL = "smollm2:135m"
PROMPT = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
TOKENS = 64


def in_process_rate() -> Callable[[], float]:
    """Load the model here once; return a function that decodes TOKENS tokens and gives tokens/s."""
    import torch

    from rk.daemon.backends.hf_chat import HFChatModel
    from rk.daemon.jobs import GenOptions, GenSpec, Message
    from rk.daemon.models import bundled_manifests

    torch.set_num_threads(torch_threads())
    manifest = next(m for m in bundled_manifests(MODELS) if m.name == CHAT_MODEL)
    model = HFChatModel(manifest)
    req = GenSpec(messages=tuple(Message(m["role"], m["content"]) for m in PROMPT), options=GenOptions(temperature=0, max_tokens=TOKENS, cache_prompt=False))

    class Quiet:
        def prefill(self, ms: float, tokens: int, cached: int = 0) -> None: ...
        def token(self, text: str) -> None: ...

    def rate() -> float:
        r = model.generate(req, Quiet(), threading.Event())
        return r.generate_tokens / (r.generate_ms / 1000)

    return rate


def daemon_rates(c) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(backend tokens/s from `done`, tokens/s the client saw from its first token to `done`)."""
    rid = c.send("chat", model=CHAT_MODEL, messages=PROMPT,
                 options={"temperature": 0, "max_tokens": TOKENS, "cache_prompt": False})
    first = None
    n = 0
    for ev in c.events(rid):
        if ev["ev"] == "token":
            n += 1
            first = first or time.perf_counter()
        elif ev["ev"] == "done":
            s = ev["stats"]
            client = (n - 1) / (time.perf_counter() - first) if first and n > 1 else 0.0
            return s["generate_tokens"] / (s["generate_ms"] / 1000), client
    raise RuntimeError("no done event")


def run(ctx: Context) -> list[Row]:
    rounds = ctx.n(3, 1)
    local = in_process_rate()
    local()  # warm
    backend, client, baseline = [], [], []
    with daemon(ctx.tmp / "decode", models_dir=MODELS, bundled=True) as d, d.client(timeout=600) as c:
        daemon_rates(c)  # load and warm
        for _ in range(rounds):
            b, cl = daemon_rates(c)
            backend.append(b)
            client.append(cl)
            baseline.append(local())
    ctx.extra["decode"] = {"tokens": TOKENS, "daemon_backend_tps": backend, "daemon_client_tps": client,
                           "in_process_tps": baseline}
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    base = "same model in-process, no daemon"
    return [
        Row("7 decode", f"{CHAT_MODEL} tokens/s, backend figure", med(backend), med(baseline), "tokens/s", base,
            note="the runner process and pipes cost nothing per token"),
        Row("7 decode", f"{CHAT_MODEL} tokens/s seen by the client", med(client), med(baseline), "tokens/s", base),
    ]
