"""The `openai` package against a real daemon: chat (plain and streamed), completions, embeddings, models, errors."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import openai
import pytest

from daemon_proc import DaemonProc

ONE_TWO_THREE = [{"role": "user", "content": "one two three"}]
ALPHABET = " ".join("abcdefghijklmnopqrstuvwxyz")


@pytest.fixture
def client(syn: DaemonProc) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=syn.base_url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="syn:chat", messages=ONE_TWO_THREE)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == "syn:chat" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == "one two three "
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 3, 6)


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="syn:chat", messages=ONE_TWO_THREE, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three "
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_chat_streaming_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="syn:chat", messages=ONE_TWO_THREE, stream=True))  # type: ignore[arg-type]
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_max_completion_tokens_stops_with_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="syn:chat", messages=ONE_TWO_THREE, max_completion_tokens=2)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "one two " and r.choices[0].finish_reason == "length"


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    r = client.completions.create(model="syn:chat", prompt="red green blue", max_tokens=2)
    assert r.object == "text_completion" and r.choices[0].text == "red green " and r.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="syn:chat", prompt="red green", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "red green "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_base64_default_equals_float(client: openai.OpenAI) -> None:
    texts = ["the cat sat", "a dog ran", "the cat ran"]
    default = client.embeddings.create(model="syn:embed", input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model="syn:embed", input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert all(abs(np.linalg.norm(d.embedding) - 1) < 1e-5 for d in floats.data)
    assert default.usage.prompt_tokens == 9 and default.model == "syn:embed"


def test_embeddings_dimensions_and_empty_string(client: openai.OpenAI) -> None:
    # many words: some land in the first 16 buckets
    r = client.embeddings.create(model="syn:embed", input=ALPHABET, dimensions=16)
    assert len(r.data[0].embedding) == 16 and abs(np.linalg.norm(r.data[0].embedding) - 1) < 1e-5
    assert len(client.embeddings.create(model="syn:embed", input="").data) == 1  # LangChain embeds "" this way
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="syn:embed", input="x", dimensions=65)
    assert e.value.body["param"] == "dimensions"  # type: ignore[index]


def test_embeddings_token_arrays_get_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="syn:embed", input=[[9906, 1917]])
    assert e.value.body["param"] == "input" and "check_embedding_ctx_length=False" in e.value.body["message"]  # type: ignore[index]


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"syn:chat", "syn:embed", "syn:slow"} <= set(ids)
    m = client.models.retrieve("syn:chat")
    assert m.id == "syn:chat" and m.object == "model" and isinstance(m.created, int)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such:model")


@pytest.mark.parametrize("kwargs,exc,param", [
    ({"model": "syn:chat", "n": 2}, openai.BadRequestError, "n"),
    ({"model": "nope:none"}, openai.NotFoundError, "model"),
    ({"model": "syn:embed"}, openai.BadRequestError, "model"),
    ({"model": "syn:chat", "temperature": -1}, openai.BadRequestError, "temperature"),
])
def test_chat_errors_are_4xx_in_openai_shape(client: openai.OpenAI, kwargs: dict, exc: type, param: str) -> None:
    with pytest.raises(exc) as e:
        client.chat.completions.create(messages=ONE_TWO_THREE, **kwargs)  # type: ignore[call-overload]
    body = e.value.body  # type: ignore[attr-defined]
    assert set(body) == {"message", "type", "param", "code"} and body["param"] == param


def test_error_mid_stream_raises_api_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(tcp=True, env={"RK_JOB_TIMEOUT": "0.5"})
    with openai.OpenAI(base_url=d.base_url + "/v1", api_key="x", max_retries=0) as c:
        stream = c.chat.completions.create(model="syn:slow", stream=True,
                                           messages=[{"role": "user", "content": "word " * 100}])
        got = []
        with pytest.raises(openai.APIError) as e:
            for chunk in stream:
                got.append(chunk)
    assert len(got) >= 2 and "longer than" in e.value.message


def test_wrong_key_is_authentication_error(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(tcp=True, env={"RK_API_KEY": "sesame"})
    with openai.OpenAI(base_url=d.base_url + "/v1", api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as e:
            c.models.list()
        assert e.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=d.base_url + "/v1", api_key="sesame", max_retries=0) as c:
        assert c.chat.completions.create(model="syn:chat", messages=ONE_TWO_THREE).choices[0].message.content  # type: ignore[arg-type]


@pytest.mark.slow
def test_real_models_chat_and_embeddings(real_daemon: DaemonProc) -> None:
    with openai.OpenAI(base_url=real_daemon.base_url + "/v1", api_key="x", max_retries=0, timeout=300) as c:
        r = c.chat.completions.create(model="smollm2:135m", max_tokens=8, temperature=0,
                                      messages=[{"role": "user", "content": "Say hello."}])
        assert r.choices[0].message.content and r.usage is not None and 0 < r.usage.completion_tokens <= 8
        e = c.embeddings.create(model="all-minilm:l6-v2", input=["a cat", "a kitten", "stock prices"])
        v = np.array([d.embedding for d in e.data])
        assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
        assert v[0] @ v[1] > v[0] @ v[2]
