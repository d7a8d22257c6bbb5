"""Tools, reasoning and structured output through the `openai` package, against a real daemon whose
scripted model writes exactly what Qwen3 writes (`<think>` blocks, `<tool_call>` blocks)."""
from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from daemon_proc import DaemonProc
from tool_models import call, script

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
FORECASTS = {"Oslo": "4 C and rain", "Bergen": "7 C and wind"}


@pytest.fixture
def client(tools_daemon: DaemonProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=tools_daemon.base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def two_calls_then_answer() -> str:
    return script("<think>I need both forecasts.</think>\n" + call("get_weather", city="Oslo") + "\n"
                  + call("get_weather", city="Bergen"), "Forecasts: [[tool]].")


def run_tools(calls: list[Any]) -> list[dict[str, Any]]:
    """The client's side of the loop: run each call and answer it by its id."""
    return [{"role": "tool", "tool_call_id": c.id, "content": FORECASTS[json.loads(c.function.arguments)["city"]]}
            for c in calls]


def test_two_round_tool_loop_with_parallel_calls(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": two_calls_then_answer()}]
    first = client.chat.completions.create(model="qwen:tools", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    assert choice.message.content in (None, "")
    assert choice.message.reasoning_content == "I need both forecasts."
    assert first.usage is not None and first.usage.completion_tokens_details is not None
    assert 0 < (first.usage.completion_tokens_details.reasoning_tokens or 0) < first.usage.completion_tokens
    messages += [choice.message.model_dump(exclude_none=True), *run_tools(calls)]
    second = client.chat.completions.create(model="qwen:tools", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Forecasts: 4 C and rain; 7 C and wind."
    assert not second.choices[0].message.tool_calls


def collect(stream: Any) -> tuple[str, str, list[dict[str, Any]], str | None]:
    """(content, reasoning, calls by index, finish_reason) of a streamed reply."""
    content, reasoning, calls, finish = "", "", {}, None
    for ch in stream:
        if not ch.choices:
            continue
        delta = ch.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
        finish = ch.choices[0].finish_reason or finish
    return content, reasoning, [calls[i] for i in sorted(calls)], finish


def test_two_round_tool_loop_streamed(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": two_calls_then_answer()}]
    content, reasoning, calls, finish = collect(client.chat.completions.create(
        model="qwen:tools", messages=messages, tools=[WEATHER], stream=True))
    assert (content, reasoning, finish) == ("", "I need both forecasts.", "tool_calls")
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert len({c["id"] for c in calls}) == 2
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]})
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": FORECASTS[json.loads(c["arguments"])["city"]]}
                 for c in calls]
    content, reasoning, calls, finish = collect(client.chat.completions.create(
        model="qwen:tools", messages=messages, tools=[WEATHER], stream=True))
    assert (content, calls, finish) == ("Forecasts: 4 C and rain; 7 C and wind.", [], "stop")


def test_tool_choice_none_leaves_a_call_as_text(client: openai.OpenAI) -> None:
    """With tool_choice "none" the reply is never parsed for calls: what the model wrote is the answer."""
    block = call("get_weather", city="Oslo")
    r = client.chat.completions.create(model="qwen:tools", messages=[{"role": "user", "content": script(block)}],
                                       tools=[WEATHER], tool_choice="none")
    assert r.choices[0].finish_reason == "stop"
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].message.content == block


def named(name: str) -> Any:
    return {"type": "function", "function": {"name": name}}


def test_a_named_tool_choice_is_honoured(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="qwen:tools", tools=[WEATHER, TIME], tool_choice=named("get_time"),
                                       messages=[{"role": "user", "content": script(call("get_time", city="Oslo"))}])
    assert [(c.function.name, json.loads(c.function.arguments)) for c in r.choices[0].message.tool_calls or []] == [
        ("get_time", {"city": "Oslo"})]


@pytest.mark.parametrize("reply, problem", [
    (call("get_weather", city="Oslo"), "called get_weather instead"),
    ("It is noon.", "answered without one"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_that_ignores_a_named_tool_choice_fails_clearly(client: openai.OpenAI, reply: str, problem: str,
                                                                stream: bool) -> None:
    """A call to another function is never passed off as the one asked for; the job fails and says why."""
    kw: dict[str, Any] = dict(model="qwen:tools", tools=[WEATHER, TIME], tool_choice=named("get_time"),
                              messages=[{"role": "user", "content": script(reply)}])
    if not stream:
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(**kw)
        assert "tool_choice asked for a call to get_time" in str(e.value) and problem in str(e.value)
        return
    with pytest.raises(openai.APIError) as e:
        collect(client.chat.completions.create(**kw, stream=True))
    assert "tool_choice asked for a call to get_time" in str(e.value) and problem in str(e.value)


def test_tool_choice_required_without_a_call_fails(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError, match="tool_choice asked for a tool call; the model answered without one"):
        client.chat.completions.create(model="qwen:tools", tools=[WEATHER], tool_choice="required",
                                       messages=[{"role": "user", "content": script("Just text.")}])


def test_reasoning_effort_none_drops_the_reasoning(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": script("<think>secret plan</think>The answer.")}]
    on = client.chat.completions.create(model="qwen:tools", messages=msgs)  # type: ignore[arg-type]
    assert (on.choices[0].message.content, on.choices[0].message.reasoning_content) == ("The answer.", "secret plan")
    off = client.chat.completions.create(model="qwen:tools", messages=msgs, reasoning_effort="none")  # type: ignore[arg-type]
    assert off.choices[0].message.content == "The answer."
    assert getattr(off.choices[0].message, "reasoning_content", None) is None


def test_tools_on_a_model_without_them_is_an_openai_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="plain:chat", tools=[WEATHER], messages=[{"role": "user", "content": "hi"}])
    body = e.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["param"] == "tools"
    assert body["message"] == "plain:chat does not support tools"
    with pytest.raises(openai.BadRequestError, match='"plain:chat" does not support thinking'):
        client.chat.completions.create(model="plain:chat", reasoning_effort="high",
                                       messages=[{"role": "user", "content": "hi"}])


def test_parallel_tool_calls_false_keeps_the_first_call_only(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": two_calls_then_answer()}]
    r = client.chat.completions.create(model="qwen:tools", messages=messages, tools=[WEATHER], parallel_tool_calls=False)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = r.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Oslo"}]
    streamed = collect(client.chat.completions.create(model="qwen:tools", messages=messages, tools=[WEATHER],
                                                      parallel_tool_calls=False, stream=True))
    assert [json.loads(c["arguments"]) for c in streamed[2]] == [{"city": "Oslo"}] and streamed[3] == "tool_calls"
