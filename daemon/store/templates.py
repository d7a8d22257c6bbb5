"""Finding a model's chat template without loading the model, so its capabilities are known before it runs.

Where a manifest lists no capabilities, they come from the template the model was taught with
(`template_facts.from_template`): the manifest's own `template`, a Hugging Face directory's
`chat_template.jinja` / `tokenizer_config.json`, or a GGUF file's `tokenizer.chat_template`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from rk.daemon.store import gguf_meta, template_facts


class ModelFiles(Protocol):
    """What finding a template needs of a manifest (so this module does not import the manifest's)."""

    template: str | None
    files: dict[str, str]

    def path(self, key: str) -> Path: ...

# Manifest `files` keys that may name a Hugging Face directory holding a tokenizer and its template.
_HF_DIRS = ("tokenizer", "weights")


def hf_template(directory: Path) -> str | None:
    """The chat template of a Hugging Face model or tokenizer directory (the default one if it has several)."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(value, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) else None


def gguf_template(path: Path) -> str | None:
    """A GGUF file's `tokenizer.chat_template` metadata."""
    return gguf_meta.read(path).chat_template


def chat_template(m: ModelFiles) -> str | None:
    """The template `m`'s model was taught with, from the first place that has one; None if none does."""
    if m.template:
        return m.template
    for key in _HF_DIRS:
        if key in m.files:
            d = m.path(key)
            if d.is_dir() and (text := hf_template(d)) is not None:
                return text
    if "gguf" in m.files and (p := m.path("gguf")).is_file():
        return gguf_template(p)
    return None


def derived_capabilities(m: ModelFiles) -> tuple[str, ...]:
    """Capabilities of a chat model whose manifest lists none: what its chat template supports."""
    return template_facts.from_template(chat_template(m))
