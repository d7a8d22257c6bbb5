"""Table-driven tests of the pure OpenAI and Ollama adapters: wire JSON in, jobs and wire objects out."""
from __future__ import annotations

import base64
from typing import Any, Callable

import numpy as np
import pytest

from rk.daemon import media
from rk.daemon.errors import RkError
from rk.daemon.families.ollama import adapter as ollama
from rk.daemon.families.openai import adapter as openai
from rk.daemon.jobs import ChatJob, EmbedJob, JobStats, Message, ModelAction, Tool, ToolCall
from rk.daemon.store.models import Manifest
from rk.daemon.vectors import b64_float32, cut

USER = [{"role": "user", "content": "hi"}]
# A 1x1 red PNG, and the image every API decodes it to.
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c"
                                     "49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")).decode()
DOT = media.decode(base64.b64decode(PNG), "x")


# ---- bad input: each case names the field ------------------------------------------------------

BAD: list[tuple[Callable[[Any, str], Any], Any, str]] = [
    (openai.parse_chat, [], "body"),
    (openai.parse_chat, {"messages": USER}, "model"),
    (openai.parse_chat, {"model": "m", "messages": []}, "messages"),
    (openai.parse_chat, {"model": "m", "messages": "hi"}, "messages"),
    (openai.parse_chat, {"model": "m", "messages": USER, "n": 2}, "n"),
    (openai.parse_chat, {"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
    (openai.parse_chat, {"model": "m", "messages": USER, "max_tokens": 1.5}, "max_tokens"),
    (openai.parse_chat, {"model": "m", "messages": USER, "stop": 3}, "stop"),
    (openai.parse_chat, {"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    (openai.parse_chat, {"model": "m", "messages": USER, "logprobs": True}, "logprobs"),
    (openai.parse_chat, {"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    (openai.parse_completion, {"model": "m", "prompt": [1, 2, 3]}, "prompt"),
    (openai.parse_completion, {"model": "m", "prompt": ["a", "b"]}, "prompt"),
    (openai.parse_completion, {"model": "m", "prompt": "a", "suffix": "b"}, "suffix"),
    (openai.parse_embeddings, {"model": "m"}, "input"),
    (openai.parse_embeddings, {"model": "m", "input": [1, 2]}, "input"),
    (openai.parse_embeddings, {"model": "m", "input": [[1, 2], [3]]}, "input"),
    (openai.parse_embeddings, {"model": "m", "input": []}, "input"),
    (openai.parse_embeddings, {"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
    (openai.parse_embeddings, {"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
    (ollama.parse_generate, {"prompt": "x"}, "model"),
    (ollama.parse_generate, {"model": "m", "prompt": 5}, "prompt"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "raw": True, "system": "s"}, "raw"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "images": ["not base64!"]}, "images[0]"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "think": "maybe"}, "think"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "format": "yaml"}, "format"),
    (ollama.parse_chat, {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]},
     "tools[0].function.name"),
    (ollama.parse_chat, {"model": "m", "messages": USER, "tools": {"name": "f"}}, "tools"),
    (ollama.parse_chat, {"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    (ollama.parse_chat, {"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    (openai.parse_chat, {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0]"),
    (openai.parse_chat, {"model": "m", "messages": USER, "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice"),
    (openai.parse_chat, {"model": "m", "messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
    (openai.parse_chat, {"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
    (openai.parse_chat, {"model": "m", "messages": USER, "stop": ["s"] * 65}, "stop"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "keep_alive": "soon"}, "keep_alive"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "options": []}, "options"),
    (ollama.parse_generate, {"model": "m", "prompt": "x", "options": {"num_predict": "many"}}, "num_predict"),
    (ollama.parse_chat, {"model": "m", "messages": {"role": "user"}}, "messages"),
    (ollama.parse_embed, {"model": "m", "input": 3}, "input"),
    (ollama.parse_embed, {"model": "m", "input": ["a", 3]}, "input"),
    (ollama.parse_legacy_embeddings, {"model": "m"}, "prompt"),
    (ollama.parse_legacy_embeddings, {"model": "m", "prompt": "   "}, "prompt"),
    (ollama.parse_legacy_embeddings, {"model": "m", "input": ["a"]}, "prompt"),
]


@pytest.mark.parametrize("parse,body,param", BAD)
def test_bad_input_is_a_400_naming_the_field(parse: Callable[[Any, str], Any], body: Any, param: str) -> None:
    with pytest.raises(RkError) as e:
        parse(body, "peer")
    assert e.value.status == 400
    assert e.value.param == param


def test_legacy_embeddings_empty_message_is_exact() -> None:
    for body in ({"model": "m"}, {"model": "m", "prompt": ""}, {"model": "m", "input": " \n"}):
        with pytest.raises(RkError) as e:
            ollama.parse_legacy_embeddings(body, "p")
        assert e.value.message == "empty input parameter; embeddings require non-empty text"


# ---- requests -> jobs --------------------------------------------------------------------------


def test_openai_chat_leaves_unset_sampling_unset_and_max_completion_tokens_wins() -> None:
    req = openai.parse_chat({"model": "m", "messages": USER, "max_tokens": 5, "max_completion_tokens": 9,
                             "stop": "END", "seed": 3, "stream": True, "stream_options": {"include_usage": True}}, "p")
    o = req.job.options
    # no temperature or top_p of its own: the model's Modelfile, then its engine, decide (resolve.py)
    assert (o.max_tokens, o.temperature, o.top_p, o.stop, o.seed) == (9, None, None, ("END",), 3)
    assert req.stream and req.include_usage and req.job.source == "openai" and req.job.peer == "p"
    plain = openai.parse_chat({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "p")
    assert not plain.include_usage  # usage chunks exist only in streams


def test_openai_completion_is_raw_and_echo_keeps_prompt() -> None:
    req = openai.parse_completion({"model": "m", "prompt": ["Once"], "echo": True}, "p")
    assert req.job.spec.prompt == "Once" and req.job.spec.raw and req.echo == "Once"


def test_openai_embeddings_accepts_empty_string() -> None:
    req = openai.parse_embeddings({"model": "m", "input": ""}, "p")
    assert req.job.texts == ("",) and req.encoding_format == "float"


@pytest.mark.parametrize("value,seconds", [
    ("5m", 300.0), ("1h30m", 5400.0), ("-1m", -60.0), ("0", 0.0), (1800, 1800.0), ("90s", 90.0),
    ("1.5h", 5400.0), ("500ms", 0.5), ("300", 300.0), (None, None), (-1, -1.0),
])
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    assert ollama.keep_alive(value) == seconds


def test_ollama_options_ignore_unknown_and_null() -> None:
    req = ollama.parse_generate({"model": "m", "prompt": "x", "options": {
        "num_predict": 7, "temperature": 0, "top_k": 4, "top_p": 0.5, "seed": 1, "stop": ["a"], "num_ctx": 99,
        "repeat_penalty": 1.1, "mirostat": 2, "tfs_z": None, "penalize_newline": True, "min_p": None}}, "p")
    assert isinstance(req.job, ChatJob)
    o = req.job.options
    assert (o.max_tokens, o.temperature, o.top_k, o.top_p, o.seed, o.stop, o.num_ctx, o.repeat_penalty) == \
        (7, 0.0, 4, 0.5, 1, ("a",), 99, 1.1)
    assert ollama.options({"options": {"num_predict": -1}}).max_tokens is None


@pytest.mark.parametrize("parse,body,action", [
    (ollama.parse_generate, {"model": "m"}, "load"),
    (ollama.parse_generate, {"model": "m", "prompt": "", "keep_alive": 0}, "unload"),
    (ollama.parse_generate, {"model": "m", "keep_alive": "0s"}, "unload"),
    (ollama.parse_chat, {"model": "m", "messages": []}, "load"),
    (ollama.parse_chat, {"model": "m", "messages": [], "keep_alive": 0}, "unload"),
])
def test_nothing_to_generate_is_a_model_action_answered_once(parse: Any, body: dict, action: str) -> None:
    req = parse(body, "p")
    assert isinstance(req.job, ModelAction) and req.job.action == action and req.stream is False


def test_generate_with_system_becomes_messages_and_raw_stays_raw() -> None:
    req = ollama.parse_generate({"model": "m", "prompt": "hi", "system": "be brief", "stream": False}, "p")
    assert isinstance(req.job, ChatJob) and req.job.spec.messages[0] == Message("system", "be brief")
    assert req.stream is False
    raw = ollama.parse_generate({"model": "m", "prompt": "hi", "raw": True}, "p")
    assert isinstance(raw.job, ChatJob) and raw.job.spec.raw and raw.job.spec.prompt == "hi"


def test_every_message_field_is_translated_not_dropped() -> None:
    """Tools, calls, results, reasoning and images arrive typed, in either API's shape."""
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    msgs = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look: "},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "hmm",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
    ]
    schema = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    req = openai.parse_chat({"model": "m", "messages": msgs, "tools": tools,
                             "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                             "reasoning_effort": "none", "response_format": schema}, "p")
    assert isinstance(req.job, ChatJob)
    spec = req.job.spec
    assert spec.messages == (
        Message("system", "be brief"),
        Message("user", "look: ", images=(DOT,)),
        Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Oslo"}, "call_1"),), thinking="hmm"),
        Message("tool", '{"temp": 3}', tool_call_id="call_1"),
    )
    assert spec.tools == (Tool("get_weather", "Weather now", tools[0]["function"]["parameters"]),)
    assert (spec.tool_choice, spec.think, spec.format) == ("get_weather", False, {"type": "object"})
    o = ollama.parse_chat({"model": "m", "think": "high", "format": "json", "tools": tools, "messages": [
        {"role": "assistant", "content": "", "thinking": "plan",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "3 C", "tool_name": "get_weather"},
        {"role": "tool", "content": "3 C"},  # Home Assistant sends neither tool_name nor tool_call_id
        {"role": "user", "content": "and?", "images": [PNG]},
    ]}, "p")
    assert isinstance(o.job, ChatJob)
    assert o.job.spec.messages == (
        Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),), thinking="plan"),
        Message("tool", "3 C", tool_name="get_weather"),
        Message("tool", "3 C"),
        Message("user", "and?", images=(DOT,)),
    )
    assert (o.job.spec.think, o.job.spec.format, len(o.job.spec.tools)) == ("high", "json", 1)


def test_embed_without_input_loads_and_name_alias_works() -> None:
    assert isinstance(ollama.parse_embed({"name": "m", "input": ""}, "p").job, ModelAction)
    req = ollama.parse_embed({"model": "m", "input": "one", "truncate": False, "dimensions": 8}, "p")
    assert isinstance(req.job, EmbedJob) and req.job.texts == ("one",) and not req.job.truncate
    assert req.dimensions == 8
    assert ollama.parse_legacy_embeddings({"model": "m", "input": "x"}, "p").job.texts == ("x",)  # type: ignore[union-attr]


# ---- replies -----------------------------------------------------------------------------------

STATS = JobStats(load_ms=2.0, prefill_ms=3.5, prefill_tokens=4, prompt_tokens=4, generate_ms=10.0,
                 generate_tokens=6, total_ms=20.0, finish_reason="length")


def test_ollama_final_chunk_has_nanosecond_figures() -> None:
    out = ollama.final("m", STATS, chat=True)
    assert out["message"] == {"role": "assistant", "content": ""} and out["done"] is True
    assert (out["done_reason"], out["total_duration"], out["load_duration"], out["prompt_eval_count"],
            out["prompt_eval_duration"], out["eval_count"], out["eval_duration"]) == \
        ("length", 20_000_000, 2_000_000, 4, 3_500_000, 6, 10_000_000)
    assert ollama.chunk("m", "x", chat=False) | {"created_at": ""} == \
        {"model": "m", "created_at": "", "response": "x", "done": False}


def test_openai_chunks_share_identity_and_end_with_empty_delta() -> None:
    r = openai.new_reply("m", chat=True)
    first, mid = openai.chunk(r, None, first=True), openai.chunk(r, "a")
    last = openai.chunk(r, None, finish=openai.finish_reason(STATS))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert mid["choices"][0]["delta"] == {"content": "a"} and mid["choices"][0]["finish_reason"] is None
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert {c["id"] for c in (first, mid, last)} == {r.id} and {c["created"] for c in (first, mid, last)} == {r.created}
    usage = openai.usage_chunk(r, STATS)
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                                                      "prompt_tokens_details": {"cached_tokens": 0},
                                                      "completion_tokens_details": {"reasoning_tokens": 0}}


def test_openai_error_shape_has_all_keys() -> None:
    assert openai.rk_error(RkError("unauthorized", "no")) == {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert openai.rk_error(RkError("queue_full", "busy"))["error"]["type"] == "server_error"


@pytest.mark.parametrize("vec,b64", [([1.0, -2.0], "AACAPwAAAMA="), ([0.5, 0.25, -0.125], "AAAAPwAAgD4AAAC+")])
def test_base64_is_float32_little_endian(vec: list[float], b64: str) -> None:
    assert b64_float32(np.array(vec, dtype=np.float32)) == b64
    assert np.frombuffer(base64.b64decode(b64), "<f4").tolist() == vec


def test_dimensions_cut_and_renormalise() -> None:
    m = np.array([[3.0, 4.0, 12.0]], dtype=np.float32) / 13
    out = cut(m, 2)
    assert out.shape == (1, 2) and np.allclose(out, [[0.6, 0.8]])
    with pytest.raises(RkError) as e:
        cut(m, 4)
    assert e.value.param == "dimensions" and e.value.status == 400


def _manifest(**kw: Any) -> Manifest:
    base = dict(name="fam:1b", backend="rkllm", capabilities=("completion",), context_length=4096, family="qwen2",
                parameter_size="1.5B", defaults={"max_tokens": 64, "stop": ["<|im_end|>"]}, system="be kind")
    return Manifest(**(base | kw))  # type: ignore[arg-type]


def test_show_has_model_info_and_continue_parsable_parameters() -> None:
    import re

    out = ollama.show(_manifest(), "2025-01-01T00:00:00Z")
    assert out["model_info"] == {"general.architecture": "qwen2", "qwen2.context_length": 4096,
                                 "general.parameter_count": 1_500_000_000}
    lines = dict(re.match(r'^(\S+)\s+((?:".*")|\S+)$', ln).groups() for ln in out["parameters"].splitlines())  # type: ignore[union-attr]
    assert lines == {"num_ctx": "4096", "num_predict": "64", "stop": '"<|im_end|>"'}
    assert out["capabilities"] == ["completion", "embedding"] and out["system"] == "be kind"


def test_ps_entry_counts_npu_memory_and_pins_forever() -> None:
    out = ollama.ps_entry(_manifest(), 512.0, float("inf"), 4096)
    assert out["size"] == out["size_vram"] == 512 * 1024 * 1024 and out["expires_at"] == ollama.FOREVER
    assert ollama.ps_entry(_manifest(backend="hf"), 1.0, 0.0, 4096)["size_vram"] == 0


def test_version_parses_as_dotted_ints_at_least_0_5() -> None:
    v = ollama.version("0.1.0")
    parts = tuple(int(p) for p in v["version"].split("."))
    assert parts >= (0, 5) and v["rk_version"] == "0.1.0"
