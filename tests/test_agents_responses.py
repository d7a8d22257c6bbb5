"""OpenAI Responses (`/v1/responses`) through the `openai` package and raw HTTP, against a real daemon whose
scripted model writes what Qwen3 writes (`<think>`, `<tool_call>`)."""
from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from daemon_proc import DaemonProc, start_daemon
from tool_models import HOLD, call, script, stream_behind_a_held_job

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": False,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
FORECASTS = {"Oslo": "4 C and rain", "Bergen": "7 C and wind"}


@pytest.fixture
def client(agents_daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=agents_daemon.base_url + "/v1", api_key="sekret", max_retries=0, timeout=30)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if lines:
            out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


def test_plain_reply(client: openai.OpenAI) -> None:
    r = client.responses.create(model="qwen:tools", input=script("Hello there."), instructions="Be brief.")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text == "Hello there." and r.instructions == "Be brief."
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0


def test_streamed_events_as_the_sdk_parses_them(client: openai.OpenAI) -> None:
    with client.responses.stream(model="qwen:tools", input=script("<think>Hmm.</think>Streamed words."),
                                 reasoning={"effort": "low"}) as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds and "response.output_text.delta" in kinds
    assert final.output_text == "Streamed words."
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "Hmm."  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens > 0


def test_raw_stream_numbering_and_order(agents_daemon: DaemonProc) -> None:
    body = {"model": "qwen:tools", "stream": True, "tools": [WEATHER],
            "input": [{"role": "user", "content": script("Let me look." + call("get_weather", city="Oslo"))}]}
    r = httpx.post(agents_daemon.base_url + "/v1/responses", json=body, headers={"Authorization": "Bearer sekret"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(n == d["type"] for n, d in events)
    names = [n for n, _ in events]
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                         "response.output_text.done", "response.content_part.done", "response.output_item.done",
                         "response.output_item.added", "response.function_call_arguments.delta",
                         "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1][1]["response"]
    assert [o["type"] for o in final["output"]] == ["message", "function_call"]
    assert json.loads(final["output"][1]["arguments"]) == {"city": "Oslo"} and final["output"][1]["call_id"]


def test_two_round_tool_loop_with_function_call_output(client: openai.OpenAI) -> None:
    items: list[Any] = [{"role": "user", "content": script(
        call("get_weather", city="Oslo") + "\n" + call("get_weather", city="Bergen"), "Forecasts: [[tool]].")}]
    first = client.responses.create(model="qwen:tools", input=items, tools=[WEATHER])  # type: ignore[list-item]
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"}),
                                                                 ("get_weather", {"city": "Bergen"})]
    items += [c.model_dump() for c in calls]
    items += [{"type": "function_call_output", "call_id": c.call_id,
               "output": [{"type": "input_text", "text": FORECASTS[json.loads(c.arguments)["city"]]}]} for c in calls]
    with client.responses.stream(model="qwen:tools", input=items, tools=[WEATHER]) as s:  # type: ignore[arg-type]
        second = s.get_final_response()
    assert second.output_text == "Forecasts: 4 C and rain; 7 C and wind."


def test_previous_response_id_continues_a_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(model="qwen:tools", tools=[WEATHER],  # type: ignore[list-item]
                                    input=script(call("get_weather", city="Oslo"), "It is [[tool]]."))
    (c,) = [o for o in first.output if o.type == "function_call"]
    second = client.responses.create(model="qwen:tools", previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
                                     input=[{"type": "function_call_output", "call_id": c.call_id, "output": "4 C"}])
    assert second.output_text == "It is 4 C." and second.previous_response_id == first.id
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="qwen:tools", previous_response_id="resp_unknown", input="hi")
    assert e.value.code == "bad_request" and "previous_response_id" in e.value.message
    unstored = client.responses.create(model="qwen:tools", input=script("x"), store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="qwen:tools", previous_response_id=unstored.id, input="hi")


def test_codex_request_shape_is_accepted(agents_daemon: DaemonProc) -> None:
    """Developer messages, namespace and web_search tools, reasoning without effort, the extras Codex sends."""
    body = {"model": "qwen:tools", "stream": False, "store": False, "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "s1", "client_metadata": {"a": "b"}, "parallel_tool_calls": True, "tool_choice": "auto",
            "reasoning": {"summary": "auto"},
            "tools": [WEATHER, {"type": "namespace", "name": "multi_agent_v1", "tools": [
                {"type": "function", "name": "spawn", "parameters": {"type": "object"}}]},
                {"type": "web_search", "external_web_access": False}],
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be an agent."}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<env/>"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": script(
                          call("multi_agent_v1.spawn"))}]}]}
    r = httpx.post(agents_daemon.base_url + "/v1/responses", json=body, headers={"Authorization": "Bearer sekret"}, timeout=30)
    assert r.status_code == 200, r.text
    assert [(o["type"], o.get("name")) for o in r.json()["output"]] == [("function_call", "multi_agent_v1.spawn")]


def test_structured_output_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = client.responses.create(model="qwen:tools", input=script('{"n": 3}'),
                                text={"format": {"type": "json_schema", "name": "n", "schema": schema}})
    assert json.loads(r.output_text) == {"n": 3}


def test_errors_in_openai_shape(agents_daemon: DaemonProc, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope:1b", input="hi")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="qwen:tools", input=[{"type": "mystery"}])  # type: ignore[list-item]
    assert e.value.body["type"] == "invalid_request_error" and e.value.param == "input[0].type"  # type: ignore[index]
    r = httpx.post(agents_daemon.base_url + "/v1/responses", json={"model": "qwen:tools", "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_prompt_over_the_context_is_context_length_exceeded(tmp_path: Any) -> None:
    """Codex tells its user the model ran out of room on this code, in the body or in `response.failed`."""
    from daemon_proc import write_manifest
    write_manifest(tmp_path / "models", "tiny:ctx", backend="synthetic", capabilities=["completion"], context_length=8)
    d = start_daemon(tmp_path, models_dir=tmp_path / "models", bundled=False, tcp=True)
    try:
        long = " ".join(["word"] * 50)
        r = httpx.post(d.base_url + "/v1/responses", json={"model": "tiny:ctx", "input": long}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = httpx.post(d.base_url + "/v1/responses", json={"model": "tiny:ctx", "input": long, "stream": True}, timeout=30)
        events = sse(r.text)
        assert [n for n, _ in events] == ["response.created", "response.in_progress", "response.failed"]
        assert events[-1][1]["response"]["error"]["code"] == "context_length_exceeded"
    finally:
        d.stop()


def test_in_progress_repeats_while_queued_then_the_reply(agents_daemon: DaemonProc) -> None:
    """The stream opens (`response.created`) when the job is accepted and repeats `response.in_progress` while it
    waits behind another job: events, not SSE comments, since Codex's idle timeout counts events."""
    first = {"model": "qwen:tools", "stream": True, "input": script(HOLD + "first")}
    second = {**first, "input": script("second")}
    pairs = stream_behind_a_held_job(agents_daemon.base_url + "/v1/responses", first, second,
                                     {"Authorization": "Bearer sekret"}, agents_daemon.models_dir.parent / "gate",
                                     "response.in_progress")
    events = [e for _, e in pairs]
    assert [e["type"] for e in events[:3]] == ["response.created", "response.in_progress", "response.in_progress"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["output"][0]["content"][0]["text"] == "second"
