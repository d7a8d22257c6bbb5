"""8. Multi-turn KV reuse on the NPU path: prefill tokens at turns 1..10 through a real daemon whose runner
binds the C double of librkllmrt.so (tests/native, built with gcc), with and without reuse, alone and with
two conversations interleaved job by job on the queue. Also what a 1.2 re-init for a sampling change costs.

The double prefills exactly what it is sent and reports it in FINISH's perf, so the token figures are the
runtime's own accounting; its prefill *time* is not a board's, so only tokens are compared (on a board,
prefill time is roughly proportional to them: rknn-llm benchmark, ~15 s for 1,024 tokens on Qwen3-1.7B).
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Context, Row, daemon, write_manifest

TURNS = 10
QUESTION = " ".join(f"w{i}" for i in range(30))  # ~ a short user turn


def _double(ctx: Context, api: str) -> Path:
    from native_build import build_double  # tests/ is on sys.path (bench.common)

    out = ctx.tmp / "rkllm-doubles"
    out.mkdir(exist_ok=True)
    return build_double(out, api)


def _say(c: Any, history: list[dict[str, str]], tag: str, reuse: bool) -> str:
    n = sum(m["role"] == "user" for m in history) + 1
    history.append({"role": "user", "content": f"#{tag}{n} {QUESTION} [[ctx]]"})
    return c.send("chat", model="npu:chat", messages=history, options={"cache_prompt": reuse})


def _finish(c: Any, rid: str, tag: str, history: list[dict[str, str]]) -> dict[str, Any]:
    reply, stats = c.reply(rid)
    turns = sum(m["role"] == "user" for m in history)
    if reply != "ctx=" + ",".join(f"#{tag}{i}" for i in range(1, turns + 1)) + " ":
        raise RuntimeError(f"conversation {tag} saw the wrong context at turn {turns}: {reply!r}")
    history.append({"role": "assistant", "content": reply})
    return stats


def _conversations(c: Any, tags: tuple[str, ...], reuse: bool) -> dict[str, list[int]]:
    """Prefill tokens per turn of each conversation; with two tags both are queued before either runs."""
    hist: dict[str, list[dict[str, str]]] = {t: [] for t in tags}
    prefill: dict[str, list[int]] = {t: [] for t in tags}
    for _ in range(TURNS):
        rids = {t: _say(c, hist[t], t, reuse) for t in tags}
        for t, rid in rids.items():
            prefill[t].append(int(_finish(c, rid, t, hist[t])["prefill_tokens"]))
    return prefill


def _reinit_cost(ctx: Context) -> tuple[float, float, int]:
    """Median ms of a 1.2 chat whose sampling differs from the handle's (re-init) and of one that does not."""
    from rk.daemon.backends.base import RkllmOptions, RunnerConfig
    from rk.daemon.backends.rkllm import load
    from rk.daemon.jobs import GenOptions, GenSpec, Message
    from rk.daemon.store.models import Manifest

    d = ctx.tmp / "reinit"
    d.mkdir(exist_ok=True)
    (d / "m.rkllm").write_bytes(b"RKLLM fake weights")
    m = load(Manifest(name="bench:reinit", backend="rkllm", files={"model": "m.rkllm"},
                      context_length=512, dir=d), RunnerConfig(rkllm=RkllmOptions(lib=str(_double(ctx, "1.2")))))

    class Null:
        def prefill(self, ms: float, tokens: int, cached: int = 0) -> None: ...

        def token(self, text: str) -> None: ...

    def job(temperature: float) -> float:
        t0 = time.perf_counter()
        m.generate(GenSpec(messages=(Message("user", "hi"),), options=GenOptions(temperature=temperature)),
                   Null(), threading.Event())
        return (time.perf_counter() - t0) * 1000

    n = ctx.n(200, 40)
    try:
        same = [job(0.5) for _ in range(n)]
        before = m.reinits
        changing = [job(0.5 if i % 2 else 0.7) for i in range(n)]
        return statistics.median(changing), statistics.median(same), m.reinits - before
    finally:
        m.close()


def run(ctx: Context) -> list[Row]:
    models = ctx.tmp / "npu-reuse" / "models"
    write_manifest(models, "npu:chat", backend="rkllm", capabilities=["completion"], context_length=8192,
                   files={"model": "m.rkllm"})
    (models / "npu" / "chat" / "m.rkllm").write_bytes(b"RKLLM fake weights")
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for api in ("1.2", "1.3"):
        with daemon(ctx.tmp / f"npu-reuse-{api}", models_dir=models, bundled=False,
                    env={"RK_RKLLM_LIB": str(_double(ctx, api))}) as d, d.client(timeout=120) as c:
            alone = {reuse: _conversations(c, ("A",), reuse)["A"] for reuse in (True, False)}
            mixed = {reuse: _conversations(c, ("A", "B"), reuse) for reuse in (True, False)}
        raw[api] = {"alone": {"reuse": alone[True], "no_reuse": alone[False]},
                    "interleaved": {"reuse": mixed[True], "no_reuse": mixed[False]}}
        note = f"runtime {api} double"
        rows.append(Row("8 npu reuse", f"turn {TURNS} prefill tokens, one conversation", alone[True][-1],
                        alone[False][-1], "tokens", "reuse off (cache_prompt false)", target="≤ 0.1", note=note))
        rows.append(Row("8 npu reuse", f"turns 1-{TURNS} prefill tokens, one conversation", sum(alone[True]),
                        sum(alone[False]), "tokens", "reuse off", note=note))
        rows.append(Row("8 npu reuse", f"turn {TURNS} prefill tokens, two interleaved", mixed[True]["A"][-1],
                        mixed[False]["A"][-1], "tokens", "reuse off", target="= 1 (one KV cache)", note=note))
    changing, same, reinits = _reinit_cost(ctx)
    raw["reinit"] = {"changing_ms": changing, "same_ms": same, "reinits": reinits}
    rows.append(Row("8 npu reuse", "1.2 chat whose sampling differs (re-init)", changing, same, "ms",
                    "same sampling", note=f"{reinits} re-inits; on a board rkllm_init reloads the model"))
    ctx.extra["npu_reuse"] = raw
    return rows
