"""Streaming output parsers: answer text, reasoning and tool calls split out of decoded model text.

Examples pin each dialect's behaviour (including malformed calls and the RKLLM 1.3.0 reply that ends
inside the reasoning); every example also runs at one character per token. Property tests generate
model outputs from the pieces they should parse into and cut them at arbitrary points: the result never
depends on the cuts, no marker reaches the answer text, and every call comes out whole.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rk.daemon.events import Piece, Thinking, Token, ToolCalled
from rk.daemon.jobs import ToolCall
from rk.daemon.parsers import (
    HermesParser,
    Llama3Parser,
    MistralParser,
    OutputParser,
    PlainParser,
    ThinkingParser,
    coalesce,
    parser_for,
)

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
MARKERS = ("<think>", "</think>", "[THINK]", "[/THINK]", "<tool_call>", "</tool_call>", "<|python_tag|>",
           "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")
ID = re.compile(r"^call_[a-z0-9]{8}$")
# RK_PROPERTY_EXAMPLES=3000 for a deeper search than the default run.
PROPERTY = settings(max_examples=int(os.environ.get("RK_PROPERTY_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def run(parser: OutputParser, chunks: list[str]) -> list[Piece]:
    pieces: list[Piece] = []
    for c in chunks:
        pieces += parser.feed(c)
    pieces += parser.finish()
    return pieces


def shape(pieces: list[Piece]) -> list[tuple[str, Any]]:
    """Pieces joined and with ids left out, so replies can be compared whatever the chunking."""
    out: list[tuple[str, Any]] = []
    for p in coalesce(pieces):
        if isinstance(p, ToolCalled):
            assert ID.match(p.call.id), p.call.id
            out.append(("call", (p.call.name, p.call.arguments)))
        else:
            out.append(("text" if isinstance(p, Token) else "thinking", p.text))
    return out


def both_ways(make: Callable[[], OutputParser], text: str) -> list[tuple[str, Any]]:
    """Parse `text` whole and at one character per token; the two must agree."""
    whole = shape(run(make(), [text]))
    assert shape(run(make(), list(text))) == whole
    return whole


def call(name: str, **args: Any) -> tuple[str, Any]:
    return ("call", (name, args))


# ---- plain and thinking -------------------------------------------------------------------------

def test_plain_passes_every_delta_through_at_once() -> None:
    p = PlainParser()
    assert p.feed("<tool_call>") == [Token("<tool_call>")]
    assert p.feed("") == [] and p.finish() == [] and p.ended_in_thinking is False


def test_thinking_then_answer_drops_the_markers_and_the_blank_line() -> None:
    out = both_ways(ThinkingParser, "<think>\nFirst, 2+2.\nSo 4.\n</think>\n\nThe answer is 4.")
    assert out == [("thinking", "First, 2+2.\nSo 4."), ("text", "The answer is 4.")]


def test_template_opened_block_gets_only_the_closing_marker() -> None:
    make = lambda: ThinkingParser(start_in_thinking=True)  # noqa: E731
    assert both_ways(make, "Okay, the user wants 4.\n</think>\n\n4") == [("thinking", "Okay, the user wants 4."), ("text", "4")]
    # Some checkpoints still write the opening marker themselves: it is dropped, not shown.
    assert both_ways(make, "<think>\nhm\n</think>\n4") == [("thinking", "hm"), ("text", "4")]


def test_reply_that_ends_inside_the_reasoning_is_reported() -> None:
    """RKLLM 1.3.0 was reported to finish right after the reasoning, with no `</think>` and no answer."""
    for start, text in ((False, "<think>\nStill thinking about it"), (True, "Still thinking about it")):
        for chunks in ([text], list(text)):
            p = ThinkingParser(start_in_thinking=start)
            assert shape(run(p, chunks)) == [("thinking", "Still thinking about it")]
            assert p.ended_in_thinking is True
    p = ThinkingParser()
    run(p, ["<think>a</think>b"])
    assert p.ended_in_thinking is False


def test_answer_without_reasoning_keeps_its_leading_space() -> None:
    assert both_ways(ThinkingParser, " Paris") == [("text", " Paris")]
    assert both_ways(ThinkingParser, "\n\n<think>x</think>y") == [("thinking", "x"), ("text", "y")]


def test_answer_text_streams_without_waiting() -> None:
    p = ThinkingParser(HermesParser())
    assert p.feed("Hi") == [Token("Hi")]
    assert p.feed(" there") == [Token(" there")]
    assert p.feed(" <") == [Token(" ")]  # only the possible marker start waits
    assert p.feed("b>") == [Token("<b>")]


def test_reasoning_streams_as_it_comes() -> None:
    p = ThinkingParser()
    assert p.feed("<think>") == []
    assert p.feed("Let") == [Thinking("Let")]
    assert p.feed(" me see") == [Thinking(" me see")]
    assert p.feed("\n</thi") == []
    assert p.feed("nk>\n\nOK") == [Token("OK")]


def test_stray_closing_marker_never_reaches_the_answer() -> None:
    assert both_ways(ThinkingParser, "reasoning\n</think>\n\nanswer") == [("text", "reasoning\nanswer")]


def test_magistral_think_markers() -> None:
    make = lambda: ThinkingParser(open_tag="[THINK]", close_tag="[/THINK]")  # noqa: E731
    assert both_ways(make, "[THINK]plan[/THINK]done") == [("thinking", "plan"), ("text", "done")]


def test_a_partial_marker_that_turns_out_to_be_text_is_given_back() -> None:
    assert both_ways(ThinkingParser, "a <thin line") == [("text", "a <thin line")]
    assert both_ways(ThinkingParser, "a <thi") == [("text", "a <thi")]


# ---- Hermes / Qwen <tool_call> ------------------------------------------------------------------

QWEN_TWO_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
                  '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>')


def test_hermes_two_calls_no_content() -> None:
    out = both_ways(HermesParser, QWEN_TWO_CALLS)
    assert out == [call("get_weather", city="Paris"), call("get_time", tz="Europe/Paris")]


def test_every_call_gets_its_own_id() -> None:
    pieces = run(HermesParser(), [QWEN_TWO_CALLS * 20])
    ids = [p.call.id for p in pieces if isinstance(p, ToolCalled)]
    assert len(ids) == 40 and len(set(ids)) == 40 and all(ID.match(i) for i in ids)


def test_hermes_text_before_and_after_a_call() -> None:
    text = 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {"a": [1, {"b": null}]}}\n</tool_call>\nDone.'
    assert both_ways(HermesParser, text) == [("text", "Let me check.\n"), call("f", a=[1, {"b": None}]), ("text", "Done.")]


def test_hermes_malformed_json_comes_back_as_text() -> None:
    bad = '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'
    assert both_ways(HermesParser, bad) == [("text", bad)]
    not_a_call = '<tool_call>["f"]</tool_call> then'
    assert both_ways(HermesParser, not_a_call) == [("text", not_a_call)]


def test_hermes_arguments_as_a_json_string_are_decoded() -> None:
    text = '<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>'
    assert both_ways(HermesParser, text) == [call("f", x=2)]


def test_hermes_unclosed_block_at_the_end() -> None:
    assert both_ways(HermesParser, '<tool_call>\n{"name": "f", "arguments": {}}\n') == [call("f")]
    assert both_ways(HermesParser, '<tool_call>\n{"name": "f", "argu') == [("text", '<tool_call>\n{"name": "f", "argu')]
    # A second block opening before the first closed ends the first.
    text = '<tool_call>{"name": "f", "arguments": {}}<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    assert both_ways(HermesParser, text) == [call("f"), call("g")]


def test_without_tools_a_tool_call_block_is_plain_text() -> None:
    qwen25 = template("Qwen-Qwen2.5-7B-Instruct.jinja")
    assert both_ways(lambda: parser_for("qwen2", qwen25, tools=False, think=None), QWEN_TWO_CALLS) == [("text", QWEN_TWO_CALLS)]


# ---- Llama 3.x ----------------------------------------------------------------------------------

def test_llama_bare_json_call() -> None:
    text = '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}'
    assert both_ways(Llama3Parser, text) == [call("get_weather", city="Paris", days=3)]
    assert both_ways(Llama3Parser, '\n {"name": "f", "arguments": {}}') == [call("f")]


def test_llama_python_tag_and_several_calls() -> None:
    text = '<|python_tag|>{"name": "f", "parameters": {"s": "a}b\\"c"}}; {"name": "g", "parameters": {}}'
    assert both_ways(Llama3Parser, text) == [call("f", s='a}b"c'), call("g")]
    assert both_ways(Llama3Parser, 'Sure. <|python_tag|>{"name": "f", "parameters": {}}') == [("text", "Sure. "), call("f")]


def test_llama_json_that_is_not_a_call_is_text() -> None:
    for text in ('{"city": "Paris"}', '{"name": "f"}', '{"a": 1} and more', 'Use {"name": "f", "parameters": {}} here',
                 '<|python_tag|>brave_search.call(query="x")', '{"name": "f", "param'):
        assert both_ways(Llama3Parser, text) == [("text", text)], text


# ---- Mistral ------------------------------------------------------------------------------------

def test_mistral_array_form() -> None:
    text = '[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}, "id": "abc123XYZ"}, {"name": "g", "arguments": {}}]'
    assert both_ways(MistralParser, text) == [call("f", x=1), call("g")]


def test_mistral_name_args_forms() -> None:
    text = 'On it.[TOOL_CALLS]f[ARGS]{"x": [1, "]"]}[TOOL_CALLS]g[CALL_ID]a1b2c3d4e[ARGS]{}'
    assert both_ways(MistralParser, text) == [("text", "On it."), call("f", x=[1, "]"]), call("g")]


def test_mistral_malformed_comes_back_as_text() -> None:
    for text in ('[TOOL_CALLS] I cannot do that.', '[TOOL_CALLS] [{"name": "f"}, 3]', '[TOOL_CALLS]f[ARGS]oops',
                 '[TOOL_CALLS] [{"name": "f", "arguments": {}'):
        assert both_ways(MistralParser, text) == [("text", text)], text


# ---- composition and the registry ---------------------------------------------------------------

def test_qwen3_thinks_then_calls_a_tool() -> None:
    make = lambda: parser_for("qwen3", template("Qwen-Qwen3-0.6B.jinja"), tools=True, think=True)  # noqa: E731
    text = ('<think>\nThe user wants the weather. I should call get_weather.\n</think>\n\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert both_ways(make, text) == [("thinking", "The user wants the weather. I should call get_weather."),
                                     call("get_weather", city="Paris")]


def test_a_tool_call_inside_the_reasoning_ends_it() -> None:
    make = lambda: ThinkingParser(HermesParser())  # noqa: E731
    text = '<think>I will call f.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n</think>\nok'
    assert both_ways(make, text) == [("thinking", "I will call f."), call("f"), ("text", "ok")]


def test_reasoning_markers_inside_call_arguments_belong_to_the_call() -> None:
    text = '<think>x</think><tool_call>{"name": "f", "arguments": {"q": "<think>a</think>"}}</tool_call>'
    assert both_ways(lambda: ThinkingParser(HermesParser()), text) == [("thinking", "x"), call("f", q="<think>a</think>")]
    text = '{"name": "f", "parameters": {"q": "</think>"}}'
    assert both_ways(lambda: ThinkingParser(Llama3Parser()), text) == [call("f", q="</think>")]


@pytest.mark.parametrize(("family", "name", "tools", "think", "kind", "start"), [
    ("qwen3", "Qwen-Qwen3-0.6B.jinja", True, None, HermesParser, False),
    ("qwen3", "Qwen-Qwen3-0.6B.jinja", True, False, HermesParser, False),
    ("qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", True, None, HermesParser, None),
    ("qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", False, None, PlainParser, None),
    ("llama", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", True, None, HermesParser, None),
    ("llama", "meta-llama-Llama-3.1-8B-Instruct.jinja", True, None, Llama3Parser, None),
    ("llama", "meta-llama-Llama-3.2-3B-Instruct.jinja", True, None, Llama3Parser, None),
    ("", "meta-llama-Llama-3.2-3B-Instruct.jinja", True, None, Llama3Parser, None),
    ("llama", "mistralai-Mistral-Nemo-Instruct-2407.jinja", True, None, MistralParser, None),
    ("llama", "Mistral-Small-3.2-24B-Instruct-2506.jinja", True, None, MistralParser, None),
    ("mistral3", "mistralai-Ministral-3-14B-Reasoning-2512.jinja", True, None, MistralParser, False),
    ("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", False, None, None, True),
    ("qwen2", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", False, False, None, True),
    ("llama", "HuggingFaceTB-SmolLM3-3B.jinja", False, None, None, False),
    ("gemma2", "google-gemma-2-2b-it.jinja", False, None, PlainParser, None),
    ("qwen3", None, True, None, HermesParser, False),
    ("deepseek-r1", None, False, None, None, True),
    ("qwen2", None, True, None, HermesParser, None),
    ("mystery", None, True, None, HermesParser, None),
    ("mistral", None, True, None, MistralParser, None),
])
def test_registry_picks_by_template_then_family(family: str, name: str | None, tools: bool, think: Any,
                                               kind: type | None, start: bool | None) -> None:
    p = parser_for(family, template(name) if name else None, tools=tools, think=think)
    if start is None:
        assert type(p) is kind
        return
    assert isinstance(p, ThinkingParser)
    assert p.markers[2:] == (kind.markers if kind else ())
    # Whether the output is taken to start inside the reasoning block:
    assert isinstance(run(p, ["r", p.markers[1], "a"])[0], Thinking) is start


@pytest.mark.parametrize("tools", [False, True])
def test_a_declared_thinking_model_without_a_template_gets_think_blocks(tools: bool) -> None:
    """An imported `.rkllm` with `--capabilities thinking`: no template and no known family, but the
    declaration says it reasons, in `<think>` blocks like every RKLLM thinking model."""
    p = parser_for("", None, tools=tools, think=None, thinks=True)
    assert isinstance(p, ThinkingParser) and p.markers[:2] == ("<think>", "</think>")
    assert run(p, ["<think> r </think>", "\n\na"]) == [Thinking("r"), Token("a")]
    assert type(parser_for("", None, tools=tools, think=None)) is (HermesParser if tools else PlainParser)
    assert not isinstance(parser_for("", template("google-gemma-2-2b-it.jinja"), tools=tools, think=None, thinks=True),
                          ThinkingParser)  # a template that shows no reasoning decides


def test_markers_name_what_a_backend_must_decode_literally() -> None:
    assert parser_for("qwen3", template("Qwen-Qwen3-0.6B.jinja"), tools=True, think=None).markers == (
        "<think>", "</think>", "<tool_call>", "</tool_call>")
    assert parser_for("", template("mistralai-Ministral-3-14B-Reasoning-2512.jinja"), tools=True, think=None).markers == (
        "[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")
    assert parser_for("llama", template("meta-llama-Llama-3.1-8B-Instruct.jinja"), tools=True, think=None).markers == (
        "<|python_tag|>",)
    assert parser_for("llama", template("meta-llama-Llama-3.1-8B-Instruct.jinja"), tools=False, think=None).markers == ()


def test_registry_parsers_work_end_to_end_on_their_templates() -> None:
    """What each real template teaches its model to write parses into the call it means."""
    cases = [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", '{"name": "f", "parameters": {"a": 1}}'),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}]'),
        ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", '[THINK]need f[/THINK][TOOL_CALLS]f[ARGS]{"a": 1}'),
    ]
    for name, text in cases:
        out = both_ways(lambda name=name: parser_for("", template(name), tools=True, think=None), text)
        assert out[-1] == call("f", a=1), name


# ---- one character per token, every dialect -----------------------------------------------------

ONE_BYTE = [
    (lambda: parser_for("qwen3", template("Qwen-Qwen3-0.6B.jinja"), tools=True, think=None),
     '<think>\nok\n</think>\n\nHi <b>x</b>\n<tool_call>\n{"name": "f", "arguments": {"q": "<tool_call>"}}\n</tool_call>',
     [("thinking", "ok"), ("text", "Hi <b>x</b>\n"), call("f", q="<tool_call>")]),
    (lambda: parser_for("qwen2", template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"), tools=False, think=None),
     "Hmm <thin.\n</think>\n\nFour.", [("thinking", "Hmm <thin."), ("text", "Four.")]),
    (lambda: parser_for("llama", template("meta-llama-Llama-3.1-8B-Instruct.jinja"), tools=True, think=None),
     '<|python_tag|>{"name": "f", "parameters": {"q": "<|python_tag|>"}}', [call("f", q="<|python_tag|>")]),
    (lambda: parser_for("llama", template("mistralai-Mistral-Nemo-Instruct-2407.jinja"), tools=True, think=None),
     '[TOOL_CALLS] [{"name": "f", "arguments": {"q": "[TOOL_CALLS]"}}]', [call("f", q="[TOOL_CALLS]")]),
    (lambda: parser_for("", template("mistralai-Ministral-3-14B-Reasoning-2512.jinja"), tools=True, think=None),
     '[THINK]plan[/THINK]Token [TOOL_x [TOOL_CALLS]f[ARGS]{"q": 1}',
     [("thinking", "plan"), ("text", "Token [TOOL_x "), call("f", q=1)]),
    (PlainParser, "<tool_call>{}</tool_call>", [("text", "<tool_call>{}</tool_call>")]),
]


@pytest.mark.parametrize(("make", "text", "expected"), ONE_BYTE)
def test_one_character_per_token(make: Callable[[], OutputParser], text: str, expected: list) -> None:
    p = make()
    pieces: list[Piece] = []
    for ch in text:
        got = p.feed(ch)
        for piece in got:
            if isinstance(piece, Token):
                assert not any(m in piece.text for m in MARKERS if m not in expected_text(expected)), piece
        pieces += got
    pieces += p.finish()
    assert shape(pieces) == expected


def expected_text(expected: list) -> str:
    return "".join(v for k, v in expected if k == "text")


# ---- properties: any chunking gives the same reply ----------------------------------------------

words = st.text(alphabet="abc xyz.,!?\n\t<>/[]|_:", max_size=12)
# Proper starts of markers followed by a letter no marker continues with: text that must be given back.
near_misses = st.sampled_from([m[:i] for m in MARKERS for i in range(1, len(m))]).map(lambda s: s + "x")
answer_text = st.lists(words | near_misses, max_size=4).map("".join).filter(
    lambda s: not any(m in s for m in MARKERS))
json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
arguments = st.dictionaries(st.text(alphabet="abcxyz_", min_size=1, max_size=5),
                            st.recursive(json_scalars, lambda i: st.lists(i, max_size=3) | st.dictionaries(
                                st.text(max_size=4), i, max_size=3), max_leaves=6), max_size=3)
calls = st.tuples(st.sampled_from(["get_weather", "f", "lookup_2"]), arguments)


def cuts(text: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.integers(0, len(text)), max_size=12).map(
        lambda ps: [text[a:b] for a, b in zip([0, *sorted(ps)], [*sorted(ps), len(text)])])


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def check(make: Callable[[], OutputParser], text: str, chunks: list[str], items: list[tuple[str, Any]]) -> None:
    """The chunked parse equals the whole one; calls come out in order; text and reasoning are what
    was written (up to whitespace around markers); no marker is in the answer."""
    whole = shape(run(make(), [text]))
    assert shape(run(make(), chunks)) == whole
    assert [v for k, v in whole if k == "call"] == [v for k, v in items if k == "call"]
    for kind in ("text", "thinking"):
        assert squash("".join(v for k, v in whole if k == kind)) == squash("".join(v for k, v in items if k == kind))
    for k, v in whole:
        if k == "text":
            assert not any(m in v for m in MARKERS)


def hermes_render(items: list[tuple[str, Any]]) -> str:
    return "".join(v if k == "text" else f'<tool_call>\n{json.dumps({"name": v[0], "arguments": v[1]})}\n</tool_call>\n'
                   for k, v in items)


hermes_items = st.lists(answer_text.map(lambda t: ("text", t)) | calls.map(lambda c: ("call", c)), max_size=5).filter(
    lambda items: all(m not in json.dumps(v) for k, v in items if k == "call" for m in ("</tool_call>",)))


@PROPERTY
@given(data=st.data(), items=hermes_items)
def test_property_hermes(data: st.DataObject, items: list) -> None:
    text = hermes_render(items)
    check(HermesParser, text, data.draw(cuts(text)), items)


@PROPERTY
@given(data=st.data(), thinking=answer_text, start=st.booleans(), items=hermes_items)
def test_property_thinking_with_hermes(data: st.DataObject, thinking: str, start: bool, items: list) -> None:
    text = ("" if start else "<think>") + thinking + "</think>" + hermes_render(items)
    make = lambda: ThinkingParser(HermesParser(), start_in_thinking=start)  # noqa: E731
    check(make, text, data.draw(cuts(text)), [("thinking", thinking), *items])


llama_text = answer_text.filter(lambda s: "{" not in s)


@PROPERTY
@given(data=st.data(), lead=st.lists(calls, max_size=2), rest=st.lists(
    llama_text.map(lambda t: ("text", t)) | calls.map(lambda c: ("call", c)), max_size=4))
def test_property_llama3(data: st.DataObject, lead: list, rest: list) -> None:
    text = "; ".join(json.dumps({"name": n, "parameters": a}) for n, a in lead)
    items: list[tuple[str, Any]] = [("call", c) for c in lead]
    for k, v in rest:
        text += v if k == "text" else "<|python_tag|>" + json.dumps({"name": v[0], "parameters": v[1]})
        items.append((k, v))
    # Token straight after a bare-JSON call is only text if it does not itself look like JSON.
    check(Llama3Parser, text, data.draw(cuts(text)), items)


@PROPERTY
@given(data=st.data(), items=st.lists(answer_text.map(lambda t: ("text", t)) | st.lists(calls, min_size=1, max_size=3).map(
    lambda cs: ("calls", cs)), max_size=4), newer=st.booleans())
def test_property_mistral(data: st.DataObject, items: list, newer: bool) -> None:
    text, flat = "", []
    for k, v in items:
        if k == "text":
            text += v
            flat.append((k, v))
            continue
        if newer:
            text += "".join(f"[TOOL_CALLS]{n}[ARGS]{json.dumps(a)}" for n, a in v)
        else:
            text += "[TOOL_CALLS] " + json.dumps([{"name": n, "arguments": a} for n, a in v])
        flat += [("call", c) for c in v]
    check(MistralParser, text, data.draw(cuts(text)), flat)


@PROPERTY
@given(data=st.data(), text=st.text(max_size=60), tools=st.booleans(), family=st.sampled_from(["qwen3", "llama", "mistral", "x"]))
def test_property_any_text_any_chunking_never_raises_or_loses_text(data: st.DataObject, text: str, tools: bool,
                                                                    family: str) -> None:
    """Whatever the model writes: no exception, and the split never depends on the chunking."""
    make = lambda: parser_for(family, None, tools=tools, think=None)  # noqa: E731
    whole = shape(run(make(), [text]))
    assert shape(run(make(), data.draw(cuts(text)))) == whole
    if not any(m in text for m in MARKERS) and "{" not in text:
        assert squash("".join(v for k, v in whole if k in ("text", "thinking"))) == squash(text)


def test_toolcall_is_the_jobs_type() -> None:
    (piece,) = run(HermesParser(), ['<tool_call>{"name": "f", "arguments": {}}</tool_call>'])
    assert isinstance(piece, ToolCalled) and isinstance(piece.call, ToolCall)
