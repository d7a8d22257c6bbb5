"""Modelfile TEMPLATE in Go's text/template, translated to Jinja: real Ollama library templates render
as Ollama renders them, a Jinja template is taken as is, and what cannot be translated is refused."""
from __future__ import annotations

import pytest

from rk.daemon.errors import RkError
from rk.daemon.families.ollama.adapter import parse_create
from rk.daemon.gotemplate import check, render
from rk.daemon.jobs import Message, Tool, ToolCall

# Ollama's qwen2.5 template (tools as <tool_call> blocks), as `ollama show qwen2.5 --template` prints it.
QWEN = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

# Ollama's gemma3 template: system turns folded into user turns, `$last` from slice and len.
GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

# The older style: one turn per render, .System / .Prompt / .Response (Ollama's first ChatML template).
CHATML = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""

WEATHER = Tool("get_weather", "Current weather", {"type": "object", "properties": {"city": {"type": "string"}}})


def test_qwen_template_with_tools_and_a_tool_round() -> None:
    msgs = [Message("system", "Be brief."), Message("user", "Weather in Oslo?"),
            Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),)),
            Message("tool", "4 C"), Message("user", "Thanks")]
    assert render(QWEN, msgs, (WEATHER,), None) == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\n<tools>\n"
        '{"type": "function", "function": {"name": "get_weather", "description": "Current weather", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n4 C\n</tool_response><|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n")


def test_gemma_template_ends_with_the_model_turn() -> None:
    msgs = [Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Bye")]
    assert render(GEMMA, msgs, (), None) == ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                                            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")


def test_prompt_response_template_renders_each_turn_and_cuts_the_last_at_response() -> None:
    msgs = [Message("system", "Be kind."), Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Bye")]
    assert render(CHATML, msgs, (), None) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")


def test_with_comments_variables_and_a_jinja_template_as_is() -> None:
    go = '{{/* a comment */}}{{ with .System }}[{{ . }}]{{ else }}none{{ end }}{{ $n := len .Messages }}{{ $n }}'
    assert render(go, [Message("user", "x")], (), None) == "none1"
    assert render(go, [Message("system", "s"), Message("user", "x")], (), None) == "[s]2"
    tools = render("{{ json .Tools }}", [Message("user", "x")], (WEATHER,), None)
    assert tools.startswith('[{"type": "function", "function": {"name"')
    jinja = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
    assert render(jinja, [Message("user", "hi")], (), None) == "<user>hi<bot>"


@pytest.mark.parametrize("source, problem", [
    ('{{ template "x" . }}', "template"),
    ('{{ printf "%s" .Prompt }}', "printf"),
    ("{{ if .System }}never closed", "not closed"),
    ("{{ end }}", "without a block"),
    ("{% if %}", "TEMPLATE"),
])
def test_a_template_rk_cannot_render_is_refused_at_create(source: str, problem: str) -> None:
    with pytest.raises(RkError, match=problem) as e:
        check(source)
    assert e.value.code == "bad_request"
    with pytest.raises(RkError, match=problem):  # what /api/create and `rk create` send
        parse_create({"model": "m", "from": "base", "template": source})


def test_library_templates_pass_the_check() -> None:
    for source in (QWEN, GEMMA, CHATML):
        check(source)
