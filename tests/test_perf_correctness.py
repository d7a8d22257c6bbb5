"""The speed features change no result: micro-batched embeddings and prefix KV reuse (real models)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rk.client import Client

from daemon_proc import DaemonProc

pytestmark = pytest.mark.slow
EMBED = "all-minilm:l6-v2"
TEXTS = ["hi", "a cat on the mat", "the quarterly report shows revenue growth in every region we operate in " * 3,
         "kittens", "how do I reset my password if I no longer have access to the recovery email address?"]


def vectors(evs: list[dict[str, Any]]) -> np.ndarray:
    rows: dict[int, list[float]] = {}
    for e in evs:
        if e["ev"] == "vectors":
            for i, v in enumerate(e["embeddings"]):
                rows[e["index"] + i] = v
    return np.array([rows[i] for i in sorted(rows)], dtype=np.float32)


def embed(c: Client, texts: list[str]) -> np.ndarray:
    return vectors(list(c.events(c.send("embed", model=EMBED, input=texts))))


def test_batched_embeddings_equal_unbatched(real_daemon: DaemonProc) -> None:
    with real_daemon.client(timeout=300) as c:
        together = embed(c, TEXTS)
        alone = np.vstack([embed(c, [t]) for t in TEXTS])
    cos = np.sum(together * alone, axis=1)
    assert together.shape == (5, 384)
    assert cos.min() > 0.9999, cos


def test_a_batch_mixing_two_jobs_returns_each_its_own_vectors(real_daemon: DaemonProc) -> None:
    with real_daemon.client(timeout=300) as c:
        expected_a, expected_b = embed(c, TEXTS[:3]), embed(c, TEXTS[3:])
        c.send("chat", rid="hold", model="syn:slow", messages=[{"role": "user", "content": "x"}],
               options={"max_tokens": 6})  # keeps the runner busy so both jobs wait and merge
        a = c.send("embed", rid="a", model=EMBED, input=TEXTS[:3])
        b = c.send("embed", rid="b", model=EMBED, input=TEXTS[3:])
        list(c.events("hold"))
        evs_a, evs_b = list(c.events(a)), list(c.events(b))
    assert evs_a[-1]["stats"]["batch_jobs"] == 2 and evs_b[-1]["stats"]["batch_jobs"] == 2
    assert [e["index"] for e in evs_b if e["ev"] == "vectors"] == [0]
    np.testing.assert_allclose(vectors(evs_a), expected_a, atol=1e-4)
    np.testing.assert_allclose(vectors(evs_b), expected_b, atol=1e-4)


def chat(c: Client, messages: list[dict[str, str]], cache: bool) -> tuple[str, dict[str, Any]]:
    evs = list(c.events(c.send("chat", model="smollm2:135m", messages=messages,
                               options={"temperature": 0, "max_tokens": 16, "cache_prompt": cache})))
    return "".join(e["text"] for e in evs if e["ev"] == "token"), evs[-1]["stats"]


def test_greedy_chat_is_identical_with_and_without_prefix_reuse(real_daemon: DaemonProc) -> None:
    turn1 = [{"role": "user", "content": "Name a fruit that is yellow."}]
    with real_daemon.client(timeout=300) as c:
        reply1, _ = chat(c, turn1, cache=False)
        turn2 = turn1 + [{"role": "assistant", "content": reply1}, {"role": "user", "content": "And one that is red?"}]
        cold, cold_stats = chat(c, turn2, cache=False)
        chat(c, turn1, cache=True)  # leaves turn 1 in the KV cache
        chat(c, turn1 + [{"role": "assistant", "content": reply1}], cache=True)
        warm, warm_stats = chat(c, turn2, cache=True)
    assert warm == cold
    assert warm_stats["prefill_tokens"] < cold_stats["prefill_tokens"]  # only the new turn was prefilled
