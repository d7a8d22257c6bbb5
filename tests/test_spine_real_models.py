"""The bundled default models, through a real daemon: streamed chat with figures, embeddings that rank."""
from __future__ import annotations

import numpy as np
import pytest

from daemon_proc import SMOLLM_HF, DaemonProc

pytestmark = pytest.mark.slow


def greedy(d: DaemonProc, prompt: str) -> tuple[str, dict, list[str]]:
    with d.client(timeout=300) as c:
        rid = c.send("chat", model="smollm2:135m", messages=[{"role": "user", "content": prompt}],
                     options={"temperature": 0, "max_tokens": 24})
        evs = list(c.events(rid))
    tokens = [e["text"] for e in evs if e["ev"] == "token"]
    return "".join(tokens), evs[-1]["stats"], [e["ev"] for e in evs]


def test_chat_streams_with_figures_and_greedy_is_repeatable(real_daemon: DaemonProc) -> None:
    text1, stats, kinds = greedy(real_daemon, "What is the capital of France? Answer in one sentence.")
    assert kinds[0] == "queued" and "prefill" in kinds and kinds[-1] == "done"
    assert kinds.count("token") >= 3
    assert "Paris" in text1
    for key in ("prefill_ms", "prefill_tokens", "generate_ms", "generate_tokens", "memory_mb"):
        assert stats[key] > 0, key
    text2, _, _ = greedy(real_daemon, "What is the capital of France? Answer in one sentence.")
    assert text1 == text2


def test_embeddings_are_unit_384d_and_rank_related_pairs_higher(real_daemon: DaemonProc) -> None:
    texts = ["a cat sits on the mat", "a kitten rests on a rug", "the stock market fell sharply today"]
    with real_daemon.client(timeout=300) as c:
        rid = c.send("embed", model="all-minilm:l6-v2", input=texts)
        evs = list(c.events(rid))
    vecs = np.array([v for e in evs if e["ev"] == "vectors" for v in e["embeddings"]], dtype=np.float32)
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert evs[-1]["ev"] == "done" and evs[-1]["stats"]["prompt_tokens"] > 0


def test_hf_chat_model_also_embeds_and_embedding_model_refuses_chat(real_daemon: DaemonProc) -> None:
    from rk.client import DaemonError

    with real_daemon.client() as c:
        vectors = c.call("embed", model=SMOLLM_HF, input=["x"])  # seed 000: a chat model embeds too
        assert vectors["ev"] == "done" and vectors["stats"]["prompt_tokens"] >= 1
        with pytest.raises(DaemonError) as e:
            c.call("chat", model="all-minilm:l6-v2", messages=[{"role": "user", "content": "x"}])
        assert e.value.code == "not_chat_model"
