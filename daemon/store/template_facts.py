"""What a chat template says about its model: whether it takes tools, whether it thinks, and in which
dialect it writes tool calls and reasoning.

Capabilities use Ollama's names and are read from the template the way Ollama reads its own: a template
that never renders the tool list cannot tell the model about tools, so the model does not get them.
Both Jinja (Hugging Face, GGUF) and Go (Ollama Modelfile) templates are understood.
"""
from __future__ import annotations

import re
from typing import Literal

ToolDialect = Literal["hermes", "llama3", "mistral"]

# A Jinja expression or statement that uses the `tools` variable (not `tool_calls`, not `builtin_tools`),
# or a Go template's `.Tools`.
_USES_TOOLS = re.compile(r"\{[{%][^}]*(?<![\w.])tools\b|\.Tools\b")
_THINKING = re.compile(r"enable_thinking|reasoning_content|<think>|</think>|\[THINK\]|\.Thinking\b|\.IsThinkSet\b")
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


def from_template(text: str | None) -> tuple[str, ...]:
    """`completion` always; `tools` when the template renders a tool list; `thinking` when it handles reasoning."""
    caps = ["completion"]
    if text and _USES_TOOLS.search(text):
        caps.append("tools")
    if text and _THINKING.search(text):
        caps.append("thinking")
    return tuple(caps)


def tool_dialect(text: str | None) -> ToolDialect | None:
    """The tool-call format the template teaches the model (and renders past calls in), if it shows one."""
    if not text:
        return None
    if "<tool_call>" in text:
        return "hermes"
    if "[TOOL_CALLS]" in text:
        return "mistral"
    if "<|python_tag|>" in text or ("<|start_header_id|>" in text and _USES_TOOLS.search(text)):
        return "llama3"
    return None


def thinking_tags(text: str | None) -> tuple[str, str] | None:
    """The markers around reasoning in this template's output, if it handles reasoning at all."""
    if not text or not _THINKING.search(text):
        return None
    if "[THINK]" in text and "<think>" not in text:
        return ("[THINK]", "[/THINK]")
    return ("<think>", "</think>")


def opens_thinking(text: str | None, think: object = None) -> bool:
    """Whether the generation prompt already opens the reasoning block, so the output starts inside it.

    Only the part after the last `add_generation_prompt` is the generation prompt. A string there that
    opens the block without closing it opens it (DeepSeek-R1: `<think>\\n`); Qwen3's `<think>\\n\\n</think>`
    for thinking-off opens nothing. A later string that only closes the block is taken as the
    template's thinking-off switch, so with `think=False` the output starts outside.
    """
    tags = thinking_tags(text)
    if not text or tags is None:
        return False
    open_tag, close_tag = tags
    gen = text[text.rfind("add_generation_prompt"):] if "add_generation_prompt" in text else ""
    opened = False
    for m in _STRING.finditer(gen):
        lit = m.group(1) if m.group(1) is not None else m.group(2)
        if open_tag in lit:
            opened = close_tag not in lit.rsplit(open_tag, 1)[1]
        elif close_tag in lit and opened and think is False:
            opened = False
    return opened
