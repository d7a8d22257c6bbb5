"""What a chat model can do, read from its chat template (Ollama's capability names).

A template that renders `tools` can take function definitions; one that switches on `enable_thinking`
or emits `<think>` produces a reasoning trace. Every chat model completes text and, in rk, also
embeds (the same loaded model serves embeddings).
"""
from __future__ import annotations

import re

_TOOLS = re.compile(r"\btools\b")
_THINKING = re.compile(r"enable_thinking|<think>|\breasoning_content\b")


def from_template(text: str | None) -> tuple[str, ...]:
    """Capabilities of a chat model whose chat template is `text` (None or "" for a model without one)."""
    caps = ["completion", "embedding"]
    if text and _TOOLS.search(text):
        caps.append("tools")
    if text and _THINKING.search(text):
        caps.append("thinking")
    return tuple(caps)
