"""Anthropic Messages (`/v1/messages`) through the `anthropic` package and raw HTTP, against a real daemon whose
scripted model writes what Qwen3 writes (`<think>`, `<tool_call>`), plus `count_tokens` and the error shapes."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from daemon_proc import DaemonProc, start_daemon
from tool_models import HOLD, call, script, stream_behind_a_held_job, tool_models

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
FORECASTS = {"Oslo": "4 C and rain", "Bergen": "7 C and wind"}


@pytest.fixture
def client(agents_daemon: DaemonProc) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=agents_daemon.base_url, api_key="sekret", max_retries=0, timeout=30)


def sse(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a raw SSE body, comments skipped."""
    out = []
    for block in resp.text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if lines:
            name = next(ln[7:] for ln in lines if ln.startswith("event: "))
            out.append((name, json.loads(next(ln[6:] for ln in lines if ln.startswith("data: ")))))
    return out


def test_plain_reply(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="qwen:tools", max_tokens=64, system="Be brief.",
                                 messages=[{"role": "user", "content": script("Hello there.")}])
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello there."  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_max_tokens_far_over_the_context_is_clamped_not_refused(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="qwen:tools", max_tokens=128_000,
                                 messages=[{"role": "user", "content": script("Fine.")}])
    assert msg.content[0].text == "Fine." and msg.stop_reason == "end_turn"  # type: ignore[union-attr]


def test_max_tokens_reached_is_max_tokens(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="qwen:tools", max_tokens=2,
                                 messages=[{"role": "user", "content": script("A rather long answer indeed.")}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 2


def test_stop_sequence_names_the_one_that_ended_the_reply(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="qwen:tools", max_tokens=64, stop_sequences=["never", "END"],
                                 messages=[{"role": "user", "content": script("one two END three")}])
    assert msg.content[0].text == "one two "  # type: ignore[union-attr]
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "END"
    with client.messages.stream(model="qwen:tools", max_tokens=64, stop_sequences=["END"],
                                messages=[{"role": "user", "content": script("one two END three")}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "END"


def test_streamed_event_order_as_the_sdk_parses_it(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="qwen:tools", max_tokens=64,
                                messages=[{"role": "user", "content": script("<think>Hmm.</think>Streamed words.")}],
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Hmm."  # type: ignore[union-attr]
    assert final.content[0].signature  # type: ignore[union-attr]
    assert final.content[1].text == "Streamed words."  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_raw_stream_framing(agents_daemon: DaemonProc) -> None:
    body = {"model": "qwen:tools", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": script("<think>Why.</think>Because." + call("get_weather", city="Oslo"))}],
            "tools": [WEATHER]}
    r = httpx.post(agents_daemon.base_url + "/v1/messages?beta=true", json=body, headers={"x-api-key": "sekret"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r)
    names = [n for n, _ in events]
    assert all(n == d["type"] for n, d in events)
    blocks = ["content_block_start", "content_block_delta", "content_block_stop"]
    collapsed = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    assert collapsed == ["message_start", "ping", *blocks * 3, "message_delta", "message_stop"]
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""} and starts[1] == {"type": "text", "text": ""}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    thinking = [d for d in deltas if d["type"] == "thinking_delta"]
    assert "".join(d["thinking"] for d in thinking) == "Why." and deltas[len(thinking)]["type"] == "signature_delta"
    assert deltas[-1] == {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'}
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1, 2]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None} and delta["usage"]["output_tokens"] > 0


def test_two_round_tool_loop(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": script(
        call("get_weather", city="Oslo") + "\n" + call("get_weather", city="Bergen"), "Forecasts: [[tool]].")}]
    first = client.messages.create(model="qwen:tools", max_tokens=256, tools=[WEATHER], messages=messages)  # type: ignore[list-item]
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Bergen"})]
    assert len({u.id for u in uses}) == 2
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id,
                                               "content": [{"type": "text", "text": FORECASTS[u.input["city"]]}]}  # type: ignore[index]
                                              for u in uses]}]
    with client.messages.stream(model="qwen:tools", max_tokens=256, tools=[WEATHER], messages=messages) as s:  # type: ignore[list-item]
        second = s.get_final_message()
    assert second.stop_reason == "end_turn"
    assert second.content[-1].text == "Forecasts: 4 C and rain; 7 C and wind."  # type: ignore[union-attr]


def test_tool_choice_any_demands_a_call(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model="qwen:tools", max_tokens=64, tools=[WEATHER], tool_choice={"type": "any"},
                               messages=[{"role": "user", "content": script("No call from me.")}])
    assert "tool_choice" in e.value.message


def test_thinking_is_relaxed_for_a_model_that_cannot_think(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="plain:chat", max_tokens=64, thinking={"type": "adaptive"},  # type: ignore[arg-type]
                                 extra_body={"output_config": {"effort": "high"}},
                                 messages=[{"role": "user", "content": script("Plain answer.")}])
    assert msg.content[0].text == "Plain answer."  # type: ignore[union-attr]


def test_claude_code_extras_are_accepted(agents_daemon: DaemonProc) -> None:
    """Unknown fields and blocks Claude Code sends; `tools: []` means no tools (plain:chat has none)."""
    body = {"model": "plain:chat", "max_tokens": 32000, "stream": False, "tools": [],
            "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "medium"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "metadata": {"user_id": '{"device_id":"x"}'},
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc"},
                       {"type": "text", "text": "Be an agent.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": script("Done."),
                                                       "cache_control": {"type": "ephemeral"}}]},
                         {"role": "system", "content": "# Environment\ncwd: /tmp"}]}
    r = httpx.post(agents_daemon.base_url + "/v1/messages?beta=true", json=body, timeout=30,
                   headers={"x-api-key": "sekret", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "Done."}]


def test_count_tokens_uses_the_models_tokenizer(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="qwen:tools", messages=[{"role": "user", "content": "one two three"}])
    longer = client.messages.count_tokens(model="qwen:tools", system="four five",
                                          messages=[{"role": "user", "content": "one two three"}])
    assert (short.input_tokens, longer.input_tokens) == (3, 5)  # the synthetic tokenizer: one token a word


def test_errors_in_anthropic_shape(agents_daemon: DaemonProc, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="nope:1b", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="qwen:tools", max_tokens=8, messages=[])
    message = bad.value.body["error"]["message"]  # type: ignore[index]
    assert bad.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    r = httpx.post(agents_daemon.base_url + "/v1/messages",
                   json={"model": "qwen:tools", "messages": [{"role": "user", "content": "x"}]},
                   headers={"x-api-key": "sekret"})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    for headers in ({}, {"x-api-key": "wrong"}):
        r = httpx.post(agents_daemon.base_url + "/v1/messages", json={}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert "x-api-key" in r.json()["error"]["message"]
    r = httpx.post(agents_daemon.base_url + "/v1/messages", json={"model": "qwen:tools", "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]},
        headers={"Authorization": "Bearer sekret"})
    assert r.status_code == 400 and "base64" in r.json()["error"]["message"]


def test_full_queue_is_overloaded_529(tmp_path: Path) -> None:
    """A full queue is Anthropic's 529 overloaded_error (its SDKs back off), and stays 503 on the other APIs."""
    tool_models(tmp_path / "models", tmp_path / "gate")
    d = start_daemon(tmp_path, models_dir=tmp_path / "models", bundled=False, tcp=True, env={"RK_MAX_QUEUE": "1"})
    try:
        body = {"model": "qwen:tools", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": script(HOLD + "late")}]}
        with contextlib.ExitStack() as held:
            lines = []  # each stream's line iterator, kept: a dropped one closes its stream
            for _ in range(5):  # held streams: one runs, one may be handed to the runner ahead, then the queue fills
                r = held.enter_context(httpx.stream("POST", d.base_url + "/v1/messages", json=body, timeout=60))
                if r.status_code != 200:
                    break
                lines.append(r.iter_lines())
                assert next(lines[-1]) == "event: message_start"  # accepted
            r.read()
            assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
            other = httpx.post(d.base_url + "/v1/chat/completions", timeout=30,
                               json={"model": "qwen:tools", "messages": [{"role": "user", "content": "x"}]})
            assert other.status_code == 503
            (tmp_path / "gate").touch()
    finally:
        d.stop()


def test_ping_while_queued_then_the_reply(agents_daemon: DaemonProc) -> None:
    """The stream opens (message_start) as soon as the job is accepted and pings while it waits behind another."""
    first = {"model": "qwen:tools", "max_tokens": 64, "stream": True,
             "messages": [{"role": "user", "content": script(HOLD + "first")}]}
    second = {**first, "messages": [{"role": "user", "content": script("second")}]}
    events = stream_behind_a_held_job(agents_daemon.base_url + "/v1/messages", first, second, {"x-api-key": "sekret"},
                                      agents_daemon.models_dir.parent / "gate", "ping")
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "ping", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"] and "content_block_delta" in names
