"""The agents' adapters in process: the captured Claude Code and Codex request bodies parse into the right typed
jobs, and the stream builders emit the event sequences the SDKs parse (fast, no daemon)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.families.anthropic import adapter as anthropic
from rk.daemon.families.responses import adapter as responses
from rk.daemon.jobs import Generated, JobStats, Message, ToolCall
from rk.daemon.store.models import Manifest

CAPTURED = Path(__file__).parent / "fixtures" / "agents"


def body(name: str) -> dict[str, Any]:
    return json.loads((CAPTURED / name).read_text())["json"]  # type: ignore[no-any-return]


def manifest(*caps: str) -> Manifest:
    return Manifest(name="m", backend="synthetic", capabilities=list(caps))


def test_claude_code_turn1_parses_into_one_system_message_and_its_tools() -> None:
    req = anthropic.parse_messages(body("claude-code-2.1.332_turn1_messages.json"), "", manifest("completion", "tools"))
    spec = req.job.spec
    assert req.stream and req.model == "stub-model"
    assert [m.role for m in spec.messages] == ["system", "user"]  # the mid-conversation system turn is folded first
    system = spec.messages[0].content
    assert system.startswith("x-anthropic-billing-header") and "You are a Claude agent" in system
    assert "# Environment" in system  # the `role: system` message Claude Code sends after the first user turn
    assert "run echo" in spec.messages[1].content
    assert len(spec.tools) == 12 and {"Bash", "Edit", "Read"} <= {t.name for t in spec.tools}
    assert spec.think is None  # adaptive thinking relaxed: the model cannot think
    assert spec.options.max_tokens == 32000  # clamped by the backend to what the context leaves, never refused


def test_claude_code_turn2_pairs_the_tool_result_with_its_call() -> None:
    req = anthropic.parse_messages(body("claude-code-2.1.332_turn2_tool_result_messages.json"), "",
                                   manifest("completion", "tools", "thinking"))
    msgs = req.job.spec.messages
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool"]
    (use,) = msgs[2].tool_calls
    assert (use.name, use.id, use.arguments["command"]) == ("Bash", "toolu_stub1", "echo hello-from-stub")
    assert (msgs[3].tool_call_id, msgs[3].tool_name, msgs[3].content) == ("toolu_stub1", "Bash", "hello-from-stub")
    assert req.job.spec.think in ("medium", "high")  # adaptive + output_config.effort on a thinking model


def test_turn2_prompt_extends_turn1() -> None:
    """What prefix reuse relies on: turn 2's messages begin with turn 1's, for both agents."""
    for first, second, parse in (
            ("claude-code-2.1.332_turn1_messages.json", "claude-code-2.1.332_turn2_tool_result_messages.json",
             lambda b: anthropic.parse_messages(b, "", None).job.spec),
            ("codex-0.171.0_turn1_responses.json", "codex-0.171.0_turn2_function_call_output_responses.json",
             lambda b: responses.parse(b, "", None, responses.ResponseStore()).job.spec)):
        one, two = parse(body(first)), parse(body(second))
        assert two.messages[:len(one.messages)] == one.messages and len(two.messages) > len(one.messages)
        assert two.tools == one.tools


def test_codex_turn1_flattens_namespaces_and_drops_web_search() -> None:
    req = responses.parse(body("codex-0.171.0_turn1_responses.json"), "", None, responses.ResponseStore())
    spec = req.job.spec
    names = [t.name for t in spec.tools]
    agents = [f"multi_agent_v1.{n}" for n in ("close_agent", "resume_agent", "send_input", "spawn_agent", "wait_agent")]
    assert names == ["exec_command", "write_stdin", "request_user_input", "view_image", *agents, "get_goal",
                     "create_goal", "update_goal"]
    assert "web_search" not in names
    assert [m.role for m in spec.messages] == ["system", "user", "user"]  # two developer messages, folded into one
    assert spec.messages[0].content.startswith("You are a coding agent") and "<skills_instructions>" in spec.messages[0].content
    assert spec.tool_choice == "auto" and spec.think is None and not req.store


def test_codex_turn2_pairs_the_function_output_with_its_call() -> None:
    spec = responses.parse(body("codex-0.171.0_turn2_function_call_output_responses.json"), "", None,
                           responses.ResponseStore()).job.spec
    call, out = spec.messages[-2], spec.messages[-1]
    assert call.role == "assistant" and call.tool_calls == (ToolCall("exec_command", {"cmd": "echo hello-from-stub"},
                                                                     "call_stub1"),)
    assert out.role == "tool" and out.tool_call_id == "call_stub1" and out.tool_name == "exec_command"
    assert "hello-from-stub" in out.content


def test_system_first_folds_every_system_message_in_order() -> None:
    msgs = (Message("system", "a"), Message("user", "u"), Message("system", "b"), Message("assistant", "x"))
    assert f.system_first(msgs) == (Message("system", "a\n\nb"), Message("user", "u"), Message("assistant", "x"))
    plain = (Message("system", "a"), Message("user", "u"))
    assert f.system_first(plain) is plain


def test_anthropic_tool_choice_and_thinking_mapping() -> None:
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]}
    for choice, want in (({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
                         ({"type": "tool", "name": "t"}, "t")):
        spec = anthropic.parse_messages(base | {"tool_choice": choice}, "", None).job.spec
        assert spec.tool_choice == want and [t.name for t in spec.tools] == ["t"]
    think = manifest("completion", "thinking")
    for thinking, cfg, want in (({"type": "enabled", "budget_tokens": 10}, None, True), ({"type": "disabled"}, None, False),
                                ({"type": "adaptive"}, {"effort": "xhigh"}, "high"), ({"type": "adaptive"}, None, True)):
        extra = {"thinking": thinking} | ({"output_config": cfg} if cfg else {})
        assert anthropic.parse_messages(base | extra, "", think).job.spec.think == want
    assert anthropic.parse_messages(base | {"tools": []}, "", None).job.spec.tools == ()
    with pytest.raises(RkError, match="tool_choice.name"):
        anthropic.parse_messages(base | {"tool_choice": {"type": "tool", "name": "zzz"}}, "", None)


def test_tool_result_comes_before_the_users_text_and_marks_errors() -> None:
    d = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "run", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "and then?"},
                                     {"type": "tool_result", "tool_use_id": "c1", "content": "boom", "is_error": True}]}]}
    msgs = anthropic.parse_messages(d, "", None).job.spec.messages
    assert [(m.role, m.content) for m in msgs] == [("assistant", ""), ("tool", "Error: boom"), ("user", "and then?")]


def test_message_stream_blocks_and_signature() -> None:
    s = anthropic.MessageStream("m")
    events = s.start() + s.thinking("a") + s.thinking("b") + s.text("x") + s.tool_call(ToolCall("f", {"k": 1}, "t1"))
    events += s.done(JobStats(generate_tokens=3, prompt_tokens=10, cached_tokens=4), called=True)
    names = [n for n, _ in events]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    sig = events[5][1]["delta"]
    assert sig == {"type": "signature_delta", "signature": anthropic.signature("ab")}
    assert events[-2][1]["usage"] == {"input_tokens": 6, "output_tokens": 3, "cache_read_input_tokens": 4,
                                      "cache_creation_input_tokens": 0}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stop_reasons() -> None:
    assert anthropic.stop_reason(JobStats(), False) == "end_turn"
    assert anthropic.stop_reason(JobStats(finish_reason="length"), False) == "max_tokens"
    assert anthropic.stop_reason(JobStats(stop_sequence="END"), False) == "stop_sequence"
    assert anthropic.stop_reason(JobStats(), True) == "tool_use"


def test_response_events_are_numbered_and_completed_output_matches() -> None:
    reply = responses.Reply("m", {})
    s = responses.ResponseEvents(reply)
    events = s.start() + s.thinking("t") + s.text("a") + s.text("b") + s.tool_call(ToolCall("f", {}, "c1"))
    named = s.done(JobStats(), False)
    events = [e for _, e in events + named]
    assert all(name == e["type"] for name, e in named)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "ab" and final["output"][2]["call_id"] == "c1"
    ids = {e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    assert ids == {o["id"] for o in final["output"]}


def test_response_store_is_bounded_and_refuses_what_it_forgot() -> None:
    store = responses.ResponseStore(2)
    for i in range(3):
        store.put(f"r{i}", (Message("user", str(i)),))
    assert store.get("r2") == (Message("user", "2"),)
    with pytest.raises(RkError, match="previous_response_id"):
        store.get("r0")


def test_responses_reasoning_effort_and_formats() -> None:
    base = {"model": "m", "input": "hi"}
    think = manifest("completion", "thinking")
    assert responses.parse(base | {"reasoning": {"effort": "minimal"}}, "", think,
                           responses.ResponseStore()).job.spec.think == "low"
    assert responses.parse(base | {"reasoning": {"effort": "high"}}, "", manifest("completion"),
                           responses.ResponseStore()).job.spec.think is None
    spec = responses.parse(base | {"text": {"format": {"type": "json_object"}}}, "", None, responses.ResponseStore()).job.spec
    assert spec.format == "json"


def test_final_reply_objects() -> None:
    gen = Generated("hi", "why", (ToolCall("f", {"a": 1}, "c"),), JobStats(finish_reason="length"))
    msg = anthropic.message("msg_1", "m", gen)
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    r = responses.Reply("m", {}).final(gen)
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert responses.assistant_turn(r["output"]) == Message("assistant", "hi", tool_calls=(ToolCall("f", {"a": 1}, "c"),),
                                                            thinking="why")


@pytest.mark.parametrize(("first", "second", "parse"), [
    ("claude-code-2.1.332_turn1_messages.json", "claude-code-2.1.332_turn2_tool_result_messages.json",
     lambda b: anthropic.parse_messages(b, "", None).job.spec),
    ("codex-0.171.0_turn1_responses.json", "codex-0.171.0_turn2_function_call_output_responses.json",
     lambda b: responses.parse(b, "", None, responses.ResponseStore()).job.spec)])
def test_npu_reuse_takes_the_agents_turn2_as_a_continuation(first: str, second: str, parse: Any) -> None:
    """The NPU's conversation key (prompt mode): after turn 1 and the call the model wrote, turn 2 sends only
    the tool's result."""
    from rk.daemon.backends.rkllm._inputs import InputBuilder, tool_call_block
    from rk.daemon.backends.rkllm._lib import ABIS

    b = InputBuilder(Manifest(name="npu", backend="rkllm"), ABIS["1.3"])
    one, two = parse(body(first)), parse(body(second))
    (call,) = two.messages[len(one.messages)].tool_calls
    held = b.chat(one, 16384, None).key + b.reply_key(tool_call_block(call), [])
    turn2 = b.chat(two, 16384, held)
    assert turn2.reused == len(held)
    assert turn2.run.struct.role == b"tool" and b"hello-from-stub" in turn2.run.struct.prompt_input
