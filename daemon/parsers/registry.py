"""Choosing the output parser for one generation, from the model's chat template and family.

The template decides when it shows a dialect (it is what taught the model); the family is the fallback
for models without one (an `.rkllm` file whose runtime holds its own template).
"""
from __future__ import annotations

from rk.daemon.parsers.base import OutputParser, PlainParser
from rk.daemon.parsers.thinking import ThinkingParser
from rk.daemon.parsers.tools import HermesParser, Llama3Parser, MistralParser, ToolParser
from rk.daemon.store import template_facts
from rk.daemon.store.template_facts import ToolDialect

_TOOL_PARSERS: dict[ToolDialect, type[ToolParser]] = {
    "hermes": HermesParser, "llama3": Llama3Parser, "mistral": MistralParser,
}

# Family prefixes (GGUF `general.architecture` or a manifest's family) whose models write tool calls
# in a known dialect or reason in `<think>` blocks, for when there is no template to read.
_FAMILY_DIALECTS: tuple[tuple[str, ToolDialect], ...] = (
    ("qwen", "hermes"), ("hermes", "hermes"), ("smollm3", "hermes"),
    ("llama", "llama3"), ("mistral", "mistral"), ("ministral", "mistral"), ("magistral", "mistral"),
    ("devstral", "mistral"),
)
_THINKING_FAMILIES = ("qwen3", "deepseek-r1", "deepseek_r1", "qwq", "smollm3", "magistral")
# Families whose own templates open the block for the reply (DeepSeek-R1, QwQ): output starts inside it.
_OPENING_FAMILIES = ("deepseek-r1", "deepseek_r1", "qwq")


def parser_for(family: str, template: str | None, *, tools: bool, think: bool | str | None,
               thinks: bool = False) -> OutputParser:
    """The parser for one generation.

    `tools`: the request carries tools (without them a `<tool_call>` is plain text). `think`: the
    request's setting (None = model default); it decides whether a template's thinking-off switch
    applies. `thinks`: the model declares the thinking capability, which without a template to read
    means `<think>` blocks, as RKLLM's Qwen3 writes them.
    Thinking markers are always parsed for a thinking model, so they never reach the answer;
    the caller drops `Thinking` pieces when the request turned thinking off.
    """
    fam = (family or "").lower()
    inner = _tool_parser(fam, template) if tools else None
    tags = template_facts.thinking_tags(template)
    if tags is None and template is None and (thinks or fam.startswith(_THINKING_FAMILIES)):
        tags = ("[THINK]", "[/THINK]") if fam.startswith("magistral") else ("<think>", "</think>")
    if tags is None:
        return inner if inner is not None else PlainParser()
    if template is not None:
        start = template_facts.opens_thinking(template, think)
    else:
        start = fam.startswith(_OPENING_FAMILIES)
    return ThinkingParser(inner, start_in_thinking=start, open_tag=tags[0], close_tag=tags[1])


def _tool_parser(family: str, template: str | None) -> ToolParser:
    dialect = template_facts.tool_dialect(template)
    if dialect is None:
        dialect = next((d for prefix, d in _FAMILY_DIALECTS if family.startswith(prefix)), "hermes")
    return _TOOL_PARSERS[dialect]()
