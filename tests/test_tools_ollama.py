"""Tools, thinking and structured output through the `ollama` package and the line protocol, against a
real daemon whose scripted model writes what Qwen3 writes; plus the streaming guarantees at one
character per token."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import ollama
import pytest

from daemon_proc import DaemonProc, start_daemon, write_manifest
from tool_models import HOLD, call, script, tool_models

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
FORECASTS = {"Oslo": "4 C and rain", "Bergen": "7 C and wind"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("tools-ollama")
    tool_models(tmp / "models", tmp / "gate")
    # An unknown backend (no backend_info, so no structured mode): admission refuses `format` first.
    write_manifest(tmp / "models", "nofmt:chat", backend="elsewhere", capabilities=["completion"])
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True)
    yield d
    d.stop()


@pytest.fixture
def client(daemon: DaemonProc) -> ollama.Client:
    return ollama.Client(host=daemon.base_url, timeout=30)


def loop_script() -> str:
    return script("<think>Two cities.</think>" + call("get_weather", city="Oslo") + call("get_weather", city="Bergen"),
                  "Forecasts: [[tool]].")


@pytest.mark.parametrize("with_tool_name", [True, False], ids=["tool_name", "home-assistant"])
def test_two_round_tool_loop(client: ollama.Client, with_tool_name: bool) -> None:
    """Home Assistant answers a call with a bare `{"role": "tool", "content": ...}`: no name, no id."""
    messages: list[Any] = [{"role": "user", "content": loop_script()}]
    first = client.chat(model="qwen:tools", messages=messages, tools=[WEATHER])
    calls = first.message.tool_calls or []
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})]
    assert first.message.thinking == "Two cities." and first.message.content == ""
    assert first.done_reason == "stop"
    messages.append(first.message)
    for c in calls:
        result = {"role": "tool", "content": FORECASTS[c.function.arguments["city"]]}
        messages.append(result | ({"tool_name": c.function.name} if with_tool_name else {}))
    second = client.chat(model="qwen:tools", messages=messages, tools=[WEATHER])
    assert second.message.content == "Forecasts: 4 C and rain; 7 C and wind." and not second.message.tool_calls


def test_streamed_calls_each_arrive_whole_before_done(client: ollama.Client) -> None:
    chunks = list(client.chat(model="qwen:bytes", messages=[{"role": "user", "content": loop_script()}],
                              tools=[WEATHER], stream=True))
    with_calls = [c for c in chunks if c.message.tool_calls]
    assert [len(c.message.tool_calls or []) for c in with_calls] == [1, 1]
    assert [dict(c.message.tool_calls[0].function.arguments) for c in with_calls] == [{"city": "Oslo"}, {"city": "Bergen"}]  # type: ignore[index]
    assert chunks[-1].done and not chunks[-1].message.tool_calls and chunks.index(with_calls[-1]) < len(chunks) - 1
    assert "".join(c.message.thinking or "" for c in chunks) == "Two cities."
    assert "".join(c.message.content or "" for c in chunks) == ""


@pytest.mark.parametrize("think, shown", [(True, True), ("high", True), (None, True), (False, False)])
@pytest.mark.parametrize("stream", [False, True])
def test_think_settings(client: ollama.Client, think: Any, shown: bool, stream: bool) -> None:
    """Thinking goes to `message.thinking`, never to content; `think: false` sends no thinking at all."""
    msgs = [{"role": "user", "content": script("<think>Weigh it up.</think>Yes.")}]
    if stream:
        chunks = list(client.chat(model="qwen:bytes", messages=msgs, think=think, stream=True))
        content = "".join(c.message.content or "" for c in chunks)
        thinking = [c.message.thinking for c in chunks if c.message.thinking is not None]
        assert ("".join(thinking) == "Weigh it up.") if shown else thinking == []
    else:
        r = client.chat(model="qwen:tools", messages=msgs, think=think)
        content = r.message.content or ""
        assert r.message.thinking == ("Weigh it up." if shown else None)
    assert content == "Yes."


def test_think_on_a_model_without_it_is_ollamas_400(client: ollama.Client, daemon: DaemonProc) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="plain:chat", messages=[{"role": "user", "content": "hi"}], think=True)
    assert (e.value.status_code, e.value.error) == (400, '"plain:chat" does not support thinking')
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="plain:chat", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert (e.value.status_code, e.value.error) == (400, "plain:chat does not support tools")
    # think false, or no tools, is fine on the same model
    assert client.chat(model="plain:chat", messages=[{"role": "user", "content": script("ok")}],
                       think=False).message.content == "ok"


def line_events(daemon: DaemonProc, **fields: Any) -> list[dict[str, Any]]:
    """Every event of one line-protocol chat, the final `done` or `error` included."""
    with daemon.client() as c:
        rid = c.send("chat", **fields)
        events = [c.read()]
        while events[-1]["ev"] not in ("done", "error"):
            events.append(c.read())
    assert all(e["id"] == rid for e in events)
    return events


def test_tools_and_think_on_a_model_without_them_fail_on_the_line_protocol(daemon: DaemonProc) -> None:
    for extra, what in (({"tools": [WEATHER]}, "tools"), ({"think": True}, "thinking")):
        events = line_events(daemon, model="plain:chat", messages=[{"role": "user", "content": "hi"}], **extra)
        assert events[-1]["ev"] == "error" and events[-1]["code"] == "unsupported"
        assert events[-1]["message"].endswith(f"does not support {what}")


def test_line_protocol_thinking_and_tool_call_events(daemon: DaemonProc) -> None:
    events = line_events(daemon, model="qwen:tools", tools=[WEATHER], messages=[{"role": "user", "content": loop_script()}])
    kinds = [e["ev"] for e in events]
    assert "thinking" in kinds and kinds.count("tool_call") == 2 and kinds[-1] == "done"
    calls = [e for e in events if e["ev"] == "tool_call"]
    assert [(e["name"], e["arguments"]) for e in calls] == [("get_weather", {"city": "Oslo"}), ("get_weather",
                                                                                                {"city": "Bergen"})]
    assert calls[0]["call_id"] != calls[1]["call_id"]
    assert "".join(e["text"] for e in events if e["ev"] == "thinking") == "Two cities."


def test_one_character_per_token_never_leaks_a_marker(client: ollama.Client) -> None:
    """Every marker arrives split over many tokens; no part of one may reach `content` in any chunk."""
    reply = "<think>Is 1 < 2? Yes.</think>Sure: 1 < 2 and 3 > 2." + call("get_weather", city="Oslo")
    chunks = list(client.chat(model="qwen:bytes", messages=[{"role": "user", "content": script(reply)}],
                              tools=[WEATHER], stream=True))
    contents = [c.message.content for c in chunks if c.message.content]
    assert "".join(contents) == "Sure: 1 < 2 and 3 > 2."
    for piece in contents:
        assert "<t" not in piece and "</" not in piece and not piece.endswith("<")
    assert "".join(c.message.thinking or "" for c in chunks) == "Is 1 < 2? Yes."
    assert [dict(c.message.tool_calls[0].function.arguments) for c in chunks if c.message.tool_calls] == [{"city": "Oslo"}]  # type: ignore[index]


@pytest.mark.parametrize("tools", [[], [WEATHER]], ids=["no-tools", "tools"])
def test_a_plain_reply_on_a_tools_request_is_not_held_back(daemon: DaemonProc, tools: list[Any]) -> None:
    """The double writes "Hello" and then waits at `[[hold]]` until the test opens the gate: the first
    content must reach the client while the double is still waiting, with tools exactly as without."""
    gate = Path(daemon.models_dir).parent / "gate"
    gate.unlink(missing_ok=True)
    body = {"model": "qwen:bytes", "stream": True, "tools": tools,
            "messages": [{"role": "user", "content": script(f"Hello{HOLD} world")}]}
    with httpx.stream("POST", daemon.base_url + "/api/chat", json=body, timeout=httpx.Timeout(20.0)) as r:
        lines = r.iter_lines()
        seen = ""
        while seen != "Hello":  # a held-back token would leave this waiting until the read timeout fails it
            seen += json.loads(next(lines))["message"].get("content", "")
        gate.touch()
        rest = [json.loads(line) for line in lines]
    assert seen + "".join(c["message"].get("content", "") for c in rest) == "Hello world"
    assert rest[-1]["done"]
    gate.unlink()


def test_structured_output_is_checked_against_the_schema(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
              "required": ["city", "temp"]}
    good = client.chat(model="qwen:tools", format=schema,
                       messages=[{"role": "user", "content": script('<think>fill it</think>{"city": "Oslo", "temp": 4}')}])
    assert json.loads(good.message.content) == {"city": "Oslo", "temp": 4}
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="qwen:tools", format=schema, messages=[{"role": "user", "content": script('{"city": "Oslo"}')}])
    assert e.value.status_code == 500 and "does not match the schema at $: 'temp' is a required property" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="qwen:tools", format="json", messages=[{"role": "user", "content": script("Sure! {")}])
    assert "the reply is not valid JSON" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="qwen:tools", format={"type": "nonsense"}, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 400 and "format is not a valid JSON schema" in e.value.error


def test_format_on_a_backend_that_cannot_honour_it_is_a_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="nofmt:chat", format="json", messages=[{"role": "user", "content": "x"}])
    assert (e.value.status_code, e.value.error) == (
        400, "nofmt:chat does not support structured output ('format') on the elsewhere backend")


@pytest.mark.parametrize("think", [True, False])
def test_generate_sends_thinking_apart(client: ollama.Client, think: bool) -> None:
    """`/api/generate` carries the reasoning in `thinking`, and drops it with think false."""
    r = client.generate(model="qwen:tools", prompt=script("<think>Count: 1, 2.</think>Two."), think=think)
    assert r.response == "Two."
    assert r.thinking == ("Count: 1, 2." if think else None)
