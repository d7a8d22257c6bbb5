"""The runner's per-token pipeline in-process: stop strings, then the family's parser, to typed events."""
from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rk.daemon.events import Thinking, Token, ToolCalled
from rk.daemon.jobs import ChatJob, GenOptions, GenSpec, Message, Tool
from rk.daemon.resolve import resolve
from rk.daemon.runner import wire
from rk.daemon.runner.output import Pipeline, StopStrings, output_parser
from rk.daemon.store.models import Manifest

QWEN3 = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}" \
        "{% if tools %}<tools>{{ tools }}</tools> <tool_call>{% endif %}{% if enable_thinking %}<think>{% endif %}"


def run(chunks: list[str], spec: GenSpec, template: str | None = None, family: str = "") -> tuple[list[Any], Pipeline]:
    out: list[Any] = []
    m = Manifest("t:1", "synthetic", family=family)
    spec = resolve(ChatJob("t:1", spec), m, 4096).spec  # as the daemon hands it to the runner
    pipe = Pipeline(1, lambda e: out.append(e.event if isinstance(e, wire.Progress) else e), spec, threading.Event(),
                    output_parser(m, template, spec))
    for c in chunks:
        pipe.token(c)
    pipe.finish()
    return out, pipe


def text(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


def reference_cut(s: str, stops: list[str]) -> str:
    cuts = [i for i in (s.find(x) for x in stops if x) if i >= 0]
    return s[:min(cuts)] if cuts else s


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc<>/", max_size=40), st.lists(st.text(alphabet="abc<>/", min_size=1, max_size=4), max_size=5),
       st.data())
def test_stop_strings_cut_exactly_where_the_first_one_starts_however_tokens_split(s: str, stops: list[str],
                                                                                  data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(s)), max_size=10)))
    chunks = [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)])]
    f = StopStrings(tuple(stops))
    got = "".join(f.feed(c) for c in chunks) + f.flush()
    assert got == reference_cut(s, stops)
    assert f.hit == (got != s or any(x and x in s for x in stops))


def test_text_is_passed_on_at_once_and_only_a_possible_stop_is_held() -> None:
    f = StopStrings(("</end>",))
    assert f.feed("hello <") == "hello "  # "<" could begin the stop string
    assert f.feed("b") == "<b"  # it did not
    assert f.feed("</en") == "" and f.feed("d>tail") == "" and f.hit


def test_a_stop_string_sets_the_stop_event_and_ends_the_stream() -> None:
    spec = GenSpec(messages=(Message("user", "x"),), options=GenOptions(stop=("STOP",)))
    out, pipe = run(["one ", "two ST", "OP three"], spec)
    assert text(out) == "one two " and pipe.hit_stop


def test_thinking_and_tool_calls_come_out_typed_and_never_inside_the_answer_at_one_byte_per_token() -> None:
    reply = '<think>Need the weather.</think>\n\n<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    spec = GenSpec(messages=(Message("user", "x"),), tools=(Tool("weather"),), think=True)
    out, _ = run(list(reply), spec, QWEN3, "qwen3")
    assert "".join(e.text for e in out if isinstance(e, Thinking)) == "Need the weather."
    calls = [e.call for e in out if isinstance(e, ToolCalled)]
    assert [(c.name, c.arguments) for c in calls] == [("weather", {"city": "Oslo"})] and calls[0].id.startswith("call_")
    assert text(out) == ""


def test_think_false_drops_the_reasoning_and_tool_choice_none_leaves_calls_as_text() -> None:
    reply = "<think>hmm</think>Hi <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"
    spec = GenSpec(messages=(Message("user", "x"),), tools=(Tool("f"),), tool_choice="none", think=False)
    out, _ = run([reply[i:i + 3] for i in range(0, len(reply), 3)], spec, QWEN3, "qwen3")
    assert not any(isinstance(e, (Thinking, ToolCalled)) for e in out)
    assert text(out).startswith("Hi <tool_call>")


def test_a_reply_that_ends_inside_its_reasoning_is_noticed() -> None:
    spec = GenSpec(messages=(Message("user", "x"),), think=True)
    _, pipe = run(["<think>", "thinking and never closing"], spec, QWEN3, "qwen3")
    assert pipe.ended_in_thinking
    _, answered = run(["<think>a</think>", "answer"], spec, QWEN3, "qwen3")
    assert not answered.ended_in_thinking


def test_a_raw_prompt_is_plain_text() -> None:
    spec = GenSpec(prompt="<think>", raw=True)
    out, _ = run(["<think>x</think>"], spec, QWEN3, "qwen3")
    assert text(out) == "<think>x</think>"
