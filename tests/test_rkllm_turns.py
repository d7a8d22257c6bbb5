"""The rkllm backend over the C doubles (1.2.1 and 1.3.0): per-request sampling, multi-turn KV reuse,
embeddings from a chat model between turns, the tokenizer callback and late hidden states.

The double prefills only what it is sent (FINISH's prefill_tokens), keeps the context across runs with
keep_history=1, answers "[[ctx]]" with the "#marker" words of its whole context in order, and
"[[sampling]]" with the sampling it ran with.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rkllm_backend import VERSIONS, Recorder, manifest

from rk.daemon.backends.base import RkllmOptions, RunnerConfig
from rk.daemon.backends.rkllm import load
from rk.daemon.backends.rkllm.backend import RkllmModel
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenResult, GenSpec, Message

from native_build import rkllm_libs  # noqa: F401  (fixture)


@pytest.fixture(params=VERSIONS)
def model(request: pytest.FixtureRequest, tmp_path: Path, rkllm_libs: dict[str, Path]) -> Iterator[RkllmModel]:
    m = load(manifest(tmp_path, pooling="mean"), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[request.param]))))
    yield m
    m.close()


def run(m: RkllmModel, messages: list[dict[str, str]], **options: Any) -> tuple[str, GenResult]:
    sink = Recorder()
    spec = GenSpec(messages=tuple(Message(**m) for m in messages), options=GenOptions(**options))
    result = m.generate(spec, sink, threading.Event())
    return sink.text, result


class Conversation:
    """A client that keeps its history and sends all of it each turn, as chat clients do."""

    def __init__(self, m: RkllmModel, tag: str) -> None:
        self.m, self.tag, self.history, self.turns = m, tag, [], 0

    def say(self, extra: str = "", **options: Any) -> tuple[str, GenResult]:
        self.turns += 1
        self.history.append({"role": "user", "content": f"#{self.tag}{self.turns} {extra} [[ctx]]".replace("  ", " ")})
        text, result = run(self.m, self.history, **options)
        self.history.append({"role": "assistant", "content": text})
        return text, result

    def expected(self) -> str:
        """The fingerprint of a context holding exactly this conversation."""
        return "ctx=" + ",".join(f"#{self.tag}{i}" for i in range(1, self.turns + 1)) + " "


# ---- per-request sampling ---------------------------------------------------------------------------

def sampling(m: RkllmModel, **options: Any) -> dict[str, float]:
    text, _ = run(m, [{"role": "user", "content": "[[sampling]]"}], **options)
    return {k: float(v) for k, v in (w.split("=") for w in text.split())}


def test_a_per_request_temperature_reaches_the_runtime(model: RkllmModel) -> None:
    default = sampling(model)
    assert (default["temperature"], default["top_k"], default["top_p"]) == pytest.approx((0.8, 40, 0.9))
    hot = sampling(model, temperature=0.3, top_p=0.5, top_k=7)
    assert (hot["temperature"], hot["top_p"], hot["top_k"]) == pytest.approx((0.3, 0.5, 7))
    greedy = sampling(model, temperature=0)
    assert (greedy["temperature"], greedy["top_k"]) == (0, 1)
    assert sampling(model)["temperature"] == pytest.approx(0.8)  # the next job without options gets the defaults
    if model.abi.version == "1.2":  # fixed at init: one re-init per change, none while sampling stays the same
        assert model.reinits == 3 and hot["inits"] == default["inits"] + 1
        assert sampling(model)["inits"] == default["inits"] + 3
    else:  # per run: the handle is never re-created
        assert model.reinits == 0 and hot["inits"] == default["inits"]


def test_a_failed_reinit_fails_the_job_and_keeps_the_model(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    m = load(manifest(tmp_path), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.2"]))))
    try:
        with pytest.raises(RkError, match="rkllm_init failed") as e:
            sampling(m, top_p=1.5)  # the double's rkllm_init refuses it, as the runtime refuses bad values
        assert e.value.code == "model_failed"
        assert sampling(m)["top_p"] == pytest.approx(0.9)
    finally:
        m.close()


def test_a_reinit_forgets_the_conversation_and_the_next_turn_is_still_right(model: RkllmModel) -> None:
    a = Conversation(model, "A")
    a.say()
    text, result = a.say(temperature=0.2)
    assert text == a.expected()
    if model.abi.version == "1.3":
        assert result.prefill_tokens == 2  # "#A2 [[ctx]]": sampling per run keeps the handle and its cache
    else:
        assert result.prefill_tokens > 2  # a new handle: the whole conversation again


# ---- multi-turn reuse ---------------------------------------------------------------------------------

def test_follow_up_turns_prefill_only_the_new_message(model: RkllmModel) -> None:
    a = Conversation(model, "A")
    for _ in range(5):
        text, result = a.say("some words here")
        assert text == a.expected()
        assert result.prefill_tokens == 5  # "#A<n> some words here [[ctx]]", whatever the history's length
    assert model.last_cached > 0


def test_without_reuse_every_turn_sends_the_whole_conversation(model: RkllmModel) -> None:
    a = Conversation(model, "A")
    prefills = []
    for _ in range(3):
        text, result = a.say("some words here", cache_prompt=False)
        assert text == a.expected()
        prefills.append(result.prefill_tokens)
    assert prefills[0] == 5 and prefills[2] > 2 * 5  # the transcript of all earlier turns
    assert model.last_cached == 0


def test_interleaved_conversations_never_see_each_other(model: RkllmModel) -> None:
    a, b = Conversation(model, "A"), Conversation(model, "B")
    for _ in range(3):
        for conv in (a, b):
            text, _ = conv.say()
            assert text == conv.expected()
    _, again = a.say()  # A twice in a row: the cache holds A again, so only the new message is sent
    _, result = a.say()
    assert result.prefill_tokens == 2 and again.prefill_tokens > 2


def test_an_edited_history_is_sent_whole(model: RkllmModel) -> None:
    a = Conversation(model, "A")
    a.say()
    a.say()
    a.history[1]["content"] = "#X9 edited"  # the client changed the model's earlier answer
    text, result = a.say()
    assert result.prefill_tokens > 2
    assert text == "ctx=#A1,#X9,#A2,#A3 "  # its own (edited) history, rebuilt


def test_a_cut_reply_is_not_taken_for_the_cached_one(model: RkllmModel) -> None:
    a = Conversation(model, "A")
    a.say()
    a.history.append({"role": "user", "content": "#A2 one two three four"})
    text, result = run(model, a.history, max_tokens=2)
    assert result.finish_reason == "length"
    a.history.append({"role": "assistant", "content": text})
    assert text == "#A2 "  # the echo, cut after two tokens ("#A2", " ")
    a.turns = 2
    text, result = a.say()
    assert result.prefill_tokens > 2  # rebuilt from the history as the client has it, cut reply included
    assert text == "ctx=#A1,#A2,#A2,#A3 "


def test_an_embedding_between_two_turns_leaves_the_conversation_right(model: RkllmModel, tmp_path: Path,
                                                                      rkllm_libs: dict[str, Path]) -> None:
    """A chat model answers embedding jobs from the same handle; the chat's context does not leak into them."""
    a = Conversation(model, "A")
    a.say("alpha")
    vec = model.embed(["alpha beta", "gamma"], truncate=True).vectors
    text, result = a.say()
    assert text == a.expected() and result.prefill_tokens > 2  # rebuilt: the embedding run ended the cached one
    fresh = load(manifest(tmp_path, kind="embed", pooling="mean"),
                 RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[model.abi.version]))))
    try:
        assert np.allclose(vec, fresh.embed(["alpha beta", "gamma"], truncate=True).vectors)
    finally:
        fresh.close()
    assert np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)


# ---- hidden states, tokenizer callback -------------------------------------------------------------------

def test_a_normal_callback_without_hidden_states_first_is_tolerated(model: RkllmModel,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    expected = model.embed(["alpha beta"], truncate=True).vectors
    monkeypatch.setenv("FAKE_RKLLM_HIDDEN_EMPTY_FIRST", "1")  # rknn-llm #278
    res = model.embed(["alpha beta"], truncate=True)
    assert np.allclose(res.vectors, expected) and res.tokens == [2]


def test_an_unknown_pooling_is_refused(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match="params.pooling must be one of last, mean"):
        load(manifest(tmp_path, pooling="max"), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.3"]))))


WORDS = {"[UNK]": 0, "user": 1, "assistant": 2, "system": 3, "hello": 5, "world": 6, "JUNK": 7, "how": 8, "are": 9,
         "you": 10, "fine": 11}


def word_tokenizer(path: Path) -> Path:
    """A tiny word-level tokenizer directory with a chat template, as a manifest ships one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(WORDS, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}assistant {% endif %}")
    fast.save_pretrained(str(path))
    return path


def test_token_mode_sends_only_the_new_tokens_when_the_cache_holds_the_rest(tmp_path: Path) -> None:
    """Token mode's key is the token ids: prompt plus the reply's ids as generated."""
    from rk.daemon.backends.rkllm._inputs import InputBuilder
    from rk.daemon.backends.rkllm._lib import ABIS

    word_tokenizer(tmp_path / "tok")
    m = manifest(tmp_path)
    m.files["tokenizer"] = "tok"
    b = InputBuilder(m, ABIS["1.3"])
    first = b.chat(GenSpec(messages=(Message("user", "hello"),)), 512, None)
    assert first.reused == 0 and list(first.key) == [1, 5, 2]  # "user hello assistant"
    held = first.key + b.reply_key("fine", [11])
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "fine"},
               {"role": "user", "content": "how are you"}]
    second = b.chat(GenSpec(messages=tuple(Message(**m) for m in history)), 512, held)
    assert second.reused == 4 and second.run.tokens == 5  # "user how are you assistant"
    ids = second.run.struct.token_input.input_ids
    assert [ids[i] for i in range(5)] == [1, 8, 9, 10, 2]
    history[1]["content"] = "world"  # another reply than the one generated: everything again
    assert b.chat(GenSpec(messages=tuple(Message(**m) for m in history)), 512, held).reused == 0


def test_the_tokenizer_callback_reads_exactly_text_len_bytes(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    """The 1.3 double passes the prompt without a NUL, followed by " JUNK": a reader past text_len gets t7."""
    word_tokenizer(tmp_path / "tok")
    m = manifest(tmp_path, tokenizer_callback=True)
    m.files["tokenizer"] = "tok"
    model = load(m, RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.3"]))))
    try:
        assert run(model, [{"role": "user", "content": "hello world"}])[0] == "t5 t6 "
    finally:
        model.close()
    with pytest.raises(RkError, match="tokenizer_callback needs .* runtime 1.3"):
        load(m, RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.2"]))))


# ---- property: any interleaving of conversations, embeddings and cut replies ------------------------------

@pytest.fixture(scope="module", params=VERSIONS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           rkllm_libs: dict[str, Path]) -> Iterator[RkllmModel]:
    """One model for every example: each starts from whatever cache the previous one left."""
    m = load(manifest(tmp_path_factory.mktemp("shared")), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[request.param]))))
    yield m
    m.close()


_STEP = st.one_of(st.tuples(st.sampled_from("ABC"), st.sampled_from(["say", "cut", "no-reuse"])),
                  st.just(("-", "embed")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=12))
def test_no_interleaving_leaks_context(shared: RkllmModel, steps: list[tuple[str, str]]) -> None:
    convs = {tag: Conversation(shared, f"{tag}{id(steps)}") for tag in "ABC"}  # fresh tags per example
    for tag, action in steps:
        if action == "embed":
            shared.embed(["some text"], truncate=True)
            continue
        conv = convs[tag]
        if action == "cut":  # a reply cut by max_tokens: the client keeps what it got
            conv.turns += 1
            conv.history.append({"role": "user", "content": f"#{conv.tag}{conv.turns} [[ctx]]"})
            text, result = run(shared, conv.history, max_tokens=1)
            assert result.finish_reason == "length" and text == "ctx=#" + ",#".join(
                f"{conv.tag}{i}" for i in range(1, conv.turns + 1))
            conv.history.append({"role": "assistant", "content": text})
            continue
        text, _ = conv.say(**({"cache_prompt": False} if action == "no-reuse" else {}))
        assert text == conv.expected()
