"""The same daemon scenarios over every real backend: llamacpp (the bundled SmolLM2 GGUF, which also
embeds), hf (SmolLM2 converted to safetensors, MiniLM), and rkllm over each C double of librkllmrt.so.
Chat streams with figures, embeddings are unit vectors, jobs finish in arrival order with falling
positions, a cancelled waiting job leaves the rest to finish, a job cancelled mid-stream ends at once,
and a runner killed mid-job fails only that job."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import ollama
import openai
import pytest

from rk.client import Client

from daemon_proc import SMOLLM_HF, DaemonProc, start_daemon
from native_build import register_npu_models, rkllm_libs  # noqa: F401  (fixture)


@dataclass
class Backend:
    daemon: DaemonProc
    chat: str
    embed: str


@pytest.fixture(scope="module", params=[pytest.param("llamacpp", marks=pytest.mark.slow),
                                        pytest.param("hf", marks=pytest.mark.slow), "rkllm-1.2", "rkllm-1.3"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "llamacpp":
        yield Backend(request.getfixturevalue("real_daemon"), "smollm2:135m", "smollm2:135m")
        return
    if request.param == "hf":
        yield Backend(request.getfixturevalue("real_daemon"), SMOLLM_HF, "all-minilm:l6-v2")
        return
    libs: dict[str, Path] = request.getfixturevalue("rkllm_libs")
    tmp = tmp_path_factory.mktemp(request.param)
    register_npu_models(tmp / "models")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True,
                     env={"RK_RKLLM_LIB": str(libs[request.param.split("-")[1]]), "FAKE_RKLLM_TOKEN_DELAY_MS": "20"})
    yield Backend(d, "npu:chat", "npu:embed")
    d.stop()


def chat(c: Client, b: Backend, rid: str, text: str, max_tokens: int) -> str:
    return c.send("chat", rid=rid, model=b.chat, messages=[{"role": "user", "content": text}],
                  options={"max_tokens": max_tokens, "temperature": 0})


def until_final(c: Client, rid: str) -> list[dict[str, Any]]:
    out = []
    while True:
        ev = c._next_for(rid)
        out.append(ev)
        if ev["ev"] in ("done", "error"):
            return out


def test_chat_streams_with_figures(backend: Backend) -> None:
    with backend.daemon.client(timeout=300) as c:
        evs = until_final(c, chat(c, backend, "a", "Say hello to the sea and the sky", 6))
    assert evs[-1]["ev"] == "done" and sum(e["ev"] == "token" for e in evs) >= 2
    s = evs[-1]["stats"]
    assert s["prefill_ms"] > 0 and s["generate_tokens"] > 0 and s["generate_ms"] > 0


def test_embed_gives_unit_vectors_in_order(backend: Backend) -> None:
    texts = ["first text", "a second, longer text", "first text"]
    with backend.daemon.client(timeout=300) as c:
        evs = until_final(c, c.send("embed", model=backend.embed, input=texts))
    vec = np.array([v for e in evs if e["ev"] == "vectors" for v in e["embeddings"]])
    assert vec.shape[0] == 3 and np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vec[0], vec[2], atol=1e-5) and not np.allclose(vec[0], vec[1])


def test_fifo_positions_and_cancel_of_a_waiting_job(backend: Backend) -> None:
    with backend.daemon.client(timeout=300) as c:
        until_final(c, chat(c, backend, "warm", "warm up", 1))  # the model is loaded before timing matters
        rids = [chat(c, backend, f"j{i}", f"job number {i} says words", 4) for i in range(4)]
        c.send("cancel", target="j2")
        events = {r: until_final(c, r) for r in rids}
        recent = c.call("status")["recent"]
    assert events["j2"][-1]["code"] == "cancelled"
    firsts = [events[r][0]["position"] for r in rids]
    assert firsts == [1, 2, 3, 4]
    for r in ("j0", "j1", "j3"):
        assert events[r][-1]["ev"] == "done"
        pos = [e["position"] for e in events[r] if e["ev"] == "queued"]
        assert pos == sorted(pos, reverse=True)
    jobs = {r: events[r][0]["job"] for r in rids}
    finished = [x["id"] for x in reversed(recent) if x["id"] in (jobs["j0"], jobs["j1"], jobs["j3"])]
    assert finished == [jobs["j0"], jobs["j1"], jobs["j3"]]


def test_the_chat_model_also_embeds_from_the_same_load(backend: Backend) -> None:
    """Seed 000: one loaded chat model answers chats and embeddings, on every API, in FIFO order."""
    url = f"http://127.0.0.1:{backend.daemon.tcp_port}"
    before = len(backend.daemon.log())  # the daemon is shared: count only this test's loads
    with backend.daemon.client(timeout=300) as c:
        rids = [chat(c, backend, "c1", "tell me about the sea", 3),
                c.send("embed", rid="e1", model=backend.chat, input=["the sea", "the sky"]),
                chat(c, backend, "c2", "and the sky", 3),
                c.send("embed", rid="e2", model=backend.chat, input=["the sea"])]
        events = {r: until_final(c, r) for r in rids}
        recent = [x["id"] for x in reversed(c.call("status")["recent"])]
    jobs = [events[r][0]["job"] for r in rids]
    assert [j for j in recent if j in jobs] == jobs  # finished in arrival order
    line = np.array([v for r in ("e1", "e2") for e in events[r] if e["ev"] == "vectors" for v in e["embeddings"]])
    assert line.shape[0] == 3 and np.allclose(np.linalg.norm(line, axis=1), 1.0, atol=1e-4)
    via_openai = openai.OpenAI(base_url=url + "/v1", api_key="x").embeddings.create(model=backend.chat, input=["the sea"])
    via_ollama = ollama.Client(host=url).embed(model=backend.chat, input=["the sea"])
    for v in (np.array(via_openai.data[0].embedding), np.array(via_ollama.embeddings[0])):
        assert abs(np.linalg.norm(v) - 1.0) < 1e-4 and np.allclose(v, line[0], atol=1e-4)
    loaded = [m.model for m in ollama.Client(host=url).ps().models]
    assert loaded.count(backend.chat) == 1
    assert backend.daemon.log()[before:].count(f"loaded {backend.chat} ") <= 1  # one load (at most) served all of it


# Long for every backend: real models keep counting; the rkllm double echoes the prompt's words.
LONG = "Count from one to one hundred in words, one per line. " + "one two three four five six seven eight nine ten " * 20


def test_cancel_mid_stream_ends_the_job_and_the_next_one_runs(backend: Backend) -> None:
    with backend.daemon.client(timeout=300) as c:
        rid = chat(c, backend, "long", LONG, 400)
        seen = []
        while (ev := c._next_for(rid))["ev"] != "token":
            seen.append(ev)
        c.send("cancel", target=rid)
        rest = until_final(c, rid)
        after = until_final(c, chat(c, backend, "next", "Say hello", 3))
    assert rest[-1]["ev"] == "error" and rest[-1]["code"] == "cancelled"
    assert sum(e["ev"] == "token" for e in rest) < 400
    assert after[-1]["ev"] == "done"


def test_a_runner_killed_mid_job_fails_only_that_job(backend: Backend) -> None:
    with backend.daemon.client(timeout=300) as c:
        rid = chat(c, backend, "victim", LONG, 400)
        while c._next_for(rid)["ev"] != "token":
            pass
        os.kill(c.call("status")["runner"]["pid"], signal.SIGKILL)
        victim = until_final(c, rid)
        after = until_final(c, chat(c, backend, "after", "Say hello", 3))
    assert victim[-1]["ev"] == "error" and victim[-1]["code"] == "runner_crashed"
    assert after[-1]["ev"] == "done" and after[-1]["stats"]["generate_tokens"] > 0
