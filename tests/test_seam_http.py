"""The typed seam seen by real clients: capabilities shown and enforced with each API's error shape,
whole-prompt usage with the cached part apart, and a changed manifest taking effect on a loaded model."""
from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from daemon_proc import DaemonProc, write_manifest

HI = [{"role": "user", "content": "hello there friend"}]
TOOLS = [{"type": "function", "function": {"name": "get_time", "description": "The time now",
                                           "parameters": {"type": "object", "properties": {}}}}]


def url(d: DaemonProc) -> str:
    return f"http://127.0.0.1:{d.tcp_port}"


def test_show_and_models_list_capabilities(syn: DaemonProc) -> None:
    client = ollama.Client(host=url(syn))
    assert client.show("syn:chat").capabilities == ["completion"]
    assert client.show("syn:embed").capabilities == ["embedding"]
    with syn.client() as c:
        assert c.call("show", model="syn:embed")["capabilities"] == ["embedding"]


def test_tools_or_thinking_on_a_model_without_them_is_refused_in_each_apis_shape(syn: DaemonProc) -> None:
    client = ollama.Client(host=url(syn))
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="syn:chat", messages=HI, tools=TOOLS)
    assert e.value.status_code == 400 and e.value.error == "syn:chat does not support tools"
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="syn:chat", messages=HI, think=True)
    assert e.value.status_code == 400 and e.value.error == '"syn:chat" does not support thinking'
    raw = httpx.post(url(syn) + "/api/chat", json={"model": "syn:chat", "messages": HI, "tools": TOOLS})
    assert raw.status_code == 400 and raw.json() == {"error": "syn:chat does not support tools"}
    oa = openai.OpenAI(base_url=url(syn) + "/v1", api_key="x")
    with pytest.raises(openai.BadRequestError) as b:
        oa.chat.completions.create(model="syn:chat", messages=HI, tools=TOOLS)  # type: ignore[arg-type]
    assert b.value.status_code == 400 and "syn:chat does not support tools" in b.value.message
    assert b.value.body["type"] == "invalid_request_error" and b.value.body["param"] == "tools"  # type: ignore[index]
    with syn.client() as c:
        c.send("chat", rid="t", model="syn:chat", messages=HI, think=True)
        ev = c.read()
    assert (ev["id"], ev["ev"], ev["code"]) == ("t", "error", "unsupported") and "thinking" in ev["message"]
    # think: false asks for nothing, and tool_choice "none" uses no tools: both are served
    assert client.chat(model="syn:chat", messages=HI, think=False).message.content
    assert oa.chat.completions.create(model="syn:chat", messages=HI, tools=TOOLS, tool_choice="none").choices[0].message.content  # type: ignore[arg-type]


def test_embedding_on_a_chat_only_model_names_one_that_can(syn: DaemonProc) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=url(syn)).embed(model="syn:chat", input="x")
    assert e.value.status_code == 400 and "does not support embeddings" in e.value.error


def test_a_create_on_a_loaded_model_changes_its_next_reply(syn_daemon: DaemonProc) -> None:
    client = ollama.Client(host=url(syn_daemon))
    before = client.chat(model="syn:chat", messages=HI)
    assert before.eval_count == 3 and any(m.model == "syn:chat" for m in client.ps().models)
    client.create(model="syn:chat", from_="syn:chat", parameters={"num_predict": 1})
    after = client.chat(model="syn:chat", messages=HI)
    assert after.eval_count == 1 and after.done_reason == "length"


def test_first_version_manifests_with_a_kind_still_load(syn_daemon: DaemonProc) -> None:
    write_manifest(syn_daemon.models_dir, "old:chat", backend="synthetic", kind="chat", context_length=512)
    write_manifest(syn_daemon.models_dir, "old:embed", backend="synthetic", kind="embed", context_length=512)
    client = ollama.Client(host=url(syn_daemon))
    assert client.show("old:chat").capabilities == ["completion"]
    assert client.chat(model="old:chat", messages=HI).message.content == "hello there friend "
    assert len(client.embed(model="old:embed", input="x").embeddings[0]) == 64


@pytest.mark.slow
def test_identical_chats_report_the_whole_prompt_and_the_cached_part(real_daemon: DaemonProc) -> None:
    msgs = [{"role": "user", "content": "Name three colours of the sea."}]
    oa = openai.OpenAI(base_url=url(real_daemon) + "/v1", api_key="x")
    usages = [oa.chat.completions.create(model="smollm2:135m", messages=msgs, max_tokens=3, temperature=0).usage  # type: ignore[arg-type]
              for _ in range(3)]
    assert all(u is not None for u in usages)
    prompts = {u.prompt_tokens for u in usages if u}
    assert len(prompts) == 1 and prompts.pop() > 10
    cached = [u.prompt_tokens_details.cached_tokens for u in usages if u and u.prompt_tokens_details]
    assert len(cached) == 3 and cached[1] > 0 and cached[2] > 0  # the repeats were served from the KV cache
    client = ollama.Client(host=url(real_daemon))
    counts = {client.chat(model="smollm2:135m", messages=msgs, options={"num_predict": 3, "temperature": 0}).prompt_eval_count
              for _ in range(3)}
    assert counts == {usages[0].prompt_tokens}  # type: ignore[union-attr]


def test_every_request_and_line_job_gets_one_access_line_and_quiet_mutes_them(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d = daemon_factory(tcp=True)
    httpx.get(url(d) + "/api/tags")
    httpx.post(url(d) + "/api/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    with d.client() as c:
        c.call("chat", rid="r7", model="syn:chat", messages=HI)
    log = d.log()
    assert " GET /api/tags 200 " in log and " POST /api/chat 400 " in log
    assert " line chat syn:chat done " in log and "id=r7 job=j1" in log
    assert "Traceback" not in log
    q = daemon_factory(tcp=True, extra_args=["--quiet"])
    httpx.get(url(q) + "/api/tags")
    with q.client() as c:
        c.call("chat", model="syn:chat", messages=HI)
    assert "/api/tags" not in q.log() and " line chat " not in q.log()
