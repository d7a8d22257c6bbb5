"""Capabilities read from chat templates: the strings real templates contain, and what they must not trip on."""
from __future__ import annotations

from hypothesis import given, strategies as st

from rk.daemon.capabilities import from_template

QWEN3 = ("{%- if tools %}{{- '<|im_start|>system\\n' }}{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}"
         "{%- endif %}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
         "{%- endif %}")
SMOLLM2 = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
DEEPSEEK_R1 = "{{'<｜Assistant｜>'}}{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"


def test_tools_and_thinking_template() -> None:
    assert from_template(QWEN3) == ("completion", "embedding", "tools", "thinking")


def test_plain_chat_template() -> None:
    assert from_template(SMOLLM2) == ("completion", "embedding")


def test_thinking_only_template() -> None:
    assert from_template(DEEPSEEK_R1) == ("completion", "embedding", "thinking")


def test_no_template() -> None:
    assert from_template(None) == from_template("") == ("completion", "embedding")


def test_word_inside_another_word_is_not_tools() -> None:
    assert "tools" not in from_template("{{ message.toolset }} {{ mytools_x }}")


@given(st.text(), st.text())
def test_always_completion_and_a_tools_loop_anywhere_adds_tools(before: str, after: str) -> None:
    caps = from_template(before + " {% for t in tools %} " + after)
    assert caps[:2] == ("completion", "embedding") and "tools" in caps
    assert set(caps) <= {"completion", "embedding", "tools", "thinking"}
