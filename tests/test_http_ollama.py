"""The `ollama` package against a real daemon: chat, generate, embed, list, show, ps, version and the model store."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import ollama
import pytest

from daemon_proc import DaemonProc

HELLO = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def client(syn: DaemonProc) -> Iterator[ollama.Client]:
    c = ollama.Client(host=syn.base_url, timeout=30)
    yield c
    c.close()


def test_chat_streaming(client: ollama.Client) -> None:
    parts = list(client.chat(model="syn:chat", messages=HELLO, stream=True))
    assert all(p.message.role == "assistant" for p in parts)  # every chunk, the final one included
    assert "".join(p.message.content or "" for p in parts) == "hello there world "
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count == 3 and last.prompt_eval_count == 3
    assert isinstance(last.total_duration, int) and last.total_duration >= (last.eval_duration or 0) > 0


def test_chat_non_streaming_with_options(client: ollama.Client) -> None:
    r = client.chat(model="syn:chat", messages=HELLO, stream=False,
                    options={"num_predict": 2, "temperature": 0, "mirostat": 0, "tfs_z": None}, keep_alive="1h30m")
    assert r.message.content == "hello there " and r.done and r.done_reason == "length" and r.eval_count == 2


def test_generate_plain_and_streamed(client: ollama.Client) -> None:
    r = client.generate(model="syn:chat", prompt="red green blue", stream=False)
    assert r.response == "red green blue " and r.done and r.done_reason == "stop"
    parts = list(client.generate(model="syn:chat", prompt="red green", stream=True))
    assert "".join(p.response for p in parts) == "red green " and parts[-1].done


def test_generate_load_and_unload_are_one_object(client: ollama.Client) -> None:
    loaded = client.generate(model="syn:slow")
    assert loaded.done and loaded.done_reason == "load"
    assert "syn:slow" in [m.model for m in client.ps().models]
    gone = client.generate(model="syn:slow", prompt="", keep_alive=0)
    assert gone.done and gone.done_reason == "unload"
    assert "syn:slow" not in [m.model for m in client.ps().models]


def test_embed_list_in_order_and_normalised(client: ollama.Client) -> None:
    r = client.embed(model="syn:embed", input=["the cat sat", "a dog ran"])
    v = np.array(r.embeddings)
    assert v.shape == (2, 64) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    one = client.embed(model="syn:embed", input="a dog ran")
    assert np.allclose(one.embeddings[0], v[1]) and r.prompt_eval_count == 6


def test_legacy_embeddings(client: ollama.Client) -> None:
    r = client.embeddings(model="syn:embed", prompt="the cat sat")
    assert len(r.embedding) == 64
    with pytest.raises(ollama.ResponseError) as e:
        client.embeddings(model="syn:embed", prompt="")
    assert e.value.status_code == 400 and e.value.error == "empty input parameter; embeddings require non-empty text"


def test_list_show_ps_version(client: ollama.Client) -> None:
    models = client.list().models
    assert {"syn:chat", "syn:embed"} <= {m.model for m in models}
    assert all(m.size is not None and m.modified_at is not None and m.details is not None for m in models)
    shown = client.show("syn:embed")
    assert shown.modelinfo is not None and shown.modelinfo["synthetic.embedding_length"] == 64
    assert shown.capabilities == ["embedding"]
    client.chat(model="syn:chat", messages=HELLO, stream=False)
    running = {m.model: m for m in client.ps().models}
    assert running["syn:chat"].expires_at is not None and running["syn:chat"].size == 1024 * 1024
    # ollama-python 0.6 has no version() call; its own HTTP client asks the same way the others do
    v = client._client.get("/api/version").json()
    assert tuple(int(p) for p in v["version"].split(".")) >= (0, 5)


def test_name_without_tag_is_latest_everywhere(client: ollama.Client, syn: DaemonProc) -> None:
    client.copy("syn:chat", "plain")
    try:
        assert "plain:latest" in [m.model for m in client.list().models]
        assert client.chat(model="plain", messages=HELLO, stream=False).message.content
        assert client.show("plain:latest").details is not None
    finally:
        client.delete("plain")


def test_create_copy_delete(client: ollama.Client) -> None:
    statuses = [s.status for s in client.create(model="mine:v1", from_="syn:chat", system="be brief",
                                                   parameters={"num_predict": 2}, stream=True)]
    assert statuses[-1] == "success"
    shown = client.show("mine:v1")
    assert "num_predict" in (shown.parameters or "") and 'SYSTEM """be brief"""' in (shown.modelfile or "")
    # the new defaults: its SYSTEM reaches the model (the synthetic double echoes every word it is given) and
    # num_predict 2 cuts the reply to two words
    assert client.generate(model="mine:v1", prompt="a b c d", stream=False).response == "be brief "
    client.copy("mine:v1", "mine:v2")
    assert {"mine:v1", "mine:v2"} <= {m.model for m in client.list().models}
    client.delete("mine:v1")
    client.delete("mine:v2")
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("mine:v1")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        client.copy("mine:v1", "mine:v3")
    assert e.value.status_code == 404


def test_pull_of_a_local_name_succeeds_only_for_present_models(client: ollama.Client) -> None:
    assert [s.status for s in client.pull("syn:chat", stream=True)][-1] == "success"
    assert client.pull("syn:chat").status == "success"
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("qwen2.5:3b")  # not a hub name (tests/test_pull.py pulls those from a fake hub)
    assert e.value.status_code == 404 and "pull model manifest" in e.value.error


def test_unknown_model_is_404(client: ollama.Client) -> None:
    for call in (lambda: client.chat(model="nope", messages=HELLO), lambda: client.show("nope"),
                 lambda: client.embed(model="nope", input="x")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404


def test_error_mid_stream_raises(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(tcp=True, env={"RK_JOB_TIMEOUT": "0.5"})
    c = ollama.Client(host=d.base_url)
    got = []
    with pytest.raises(ollama.ResponseError) as e:
        for part in c.chat(model="syn:slow", messages=[{"role": "user", "content": "word " * 100}], stream=True):
            got.append(part)
    assert len(got) >= 2 and "longer than" in e.value.error


@pytest.mark.slow
def test_real_models_chat_and_embed(real_daemon: DaemonProc) -> None:
    c = ollama.Client(host=real_daemon.base_url, timeout=300)
    parts = list(c.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Say hi."}], stream=True,
                        options={"num_predict": 8, "temperature": 0}))
    assert "".join(p.message.content or "" for p in parts).strip() and parts[-1].done
    assert 0 < (parts[-1].eval_count or 0) <= 8 and (parts[-1].prompt_eval_duration or 0) > 0
    r = c.embed(model="all-minilm:l6-v2", input=["a cat", "a kitten"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 384
