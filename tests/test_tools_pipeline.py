"""In-process checks of the runner's output pipeline for tool_choice and format, and of the scripted double."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rk.daemon.backends.synthetic import scripted_reply
from rk.daemon.events import Token, ToolCalled
from rk.daemon.jobs import ChatJob, GenSpec, Message, Tool, ToolCall
from rk.daemon.resolve import resolve
from rk.daemon.runner import wire
from rk.daemon.runner.output import Pipeline, output_parser
from rk.daemon.store.models import Manifest

TOOLS = (Tool("get_weather"), Tool("get_time"))
CALL_WEATHER = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'


def run(spec: GenSpec, pieces: list[str]) -> tuple[list[Any], Pipeline]:
    sent: list[Any] = []
    m = Manifest(name="q:q", backend="synthetic", family="qwen3")
    spec = resolve(ChatJob("q:q", spec), m, 4096).spec  # as the daemon hands it to the runner
    parser = output_parser(m, None, spec)
    pipe = Pipeline(1, lambda e: sent.append(e.event if isinstance(e, wire.Progress) else e), spec, threading.Event(), parser)
    for p in pieces:
        pipe.token(p)
    pipe.finish()
    return sent, pipe


@pytest.mark.parametrize("choice, problem", [
    ("auto", None), ("none", None), ("required", None), ("get_weather", None),
    ("get_time", "tool_choice asked for a call to get_time; the model called get_weather instead"),
])
def test_tool_choice_against_a_weather_call(choice: str, problem: str | None) -> None:
    sent, pipe = run(GenSpec(tools=TOOLS, tool_choice=choice), [CALL_WEATHER])
    calls = [e.call.name for e in sent if isinstance(e, ToolCalled)]
    assert calls == ([] if choice in ("none", "get_time") else ["get_weather"])
    assert pipe.tool_choice.problem() == problem
    if choice == "none":  # never parsed: the block is the answer
        assert "".join(e.text for e in sent if isinstance(e, Token)) == CALL_WEATHER


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_a_text_reply_does_not_honour_a_forced_choice(choice: str) -> None:
    _, pipe = run(GenSpec(tools=TOOLS, tool_choice=choice), ["It is noon."])
    assert (pipe.tool_choice.problem() or "").endswith("the model answered without one")


def test_format_checks_only_the_answer() -> None:
    schema = {"type": "object", "required": ["a"]}
    _, pipe = run(GenSpec(format=schema), ["<think>{not json}</think>", '{"a"', ": 1}"])
    assert pipe.format_problem(schema) is None
    _, pipe = run(GenSpec(format=schema), ['{"b": 1}'])
    assert pipe.format_problem(schema) == "the reply does not match the schema at $: 'a' is a required property"


@given(replies=st.lists(st.text(st.characters(blacklist_characters="[]"), max_size=12), min_size=1, max_size=4),
       rounds=st.integers(0, 6))
def test_a_script_takes_one_reply_per_round_and_repeats_the_last(replies: list[str], rounds: int) -> None:
    msgs = [Message("user", "q [[script]]" + "[[next]]".join(replies))]
    for i in range(rounds):
        msgs += [Message("assistant", "", tool_calls=(ToolCall("f", {}, f"c{i}"),)), Message("tool", f"r{i}")]
    assert scripted_reply(msgs) == replies[min(rounds, len(replies) - 1)]


def test_tool_placeholder_takes_the_results_since_the_last_assistant_turn() -> None:
    msgs = [Message("user", "[[script]]call[[next]]got [[tool]]"), Message("assistant", "call"),
            Message("tool", "4 C"), Message("tool", "7 C")]
    assert scripted_reply(msgs) == "got 4 C; 7 C"
    assert scripted_reply([Message("user", "no script here")]) is None
