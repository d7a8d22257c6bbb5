"""Manifests for model files that arrive whole (pulled from the hub or uploaded): GGUF or `.rkllm`.

What the file itself says is used: a GGUF's metadata (architecture, context, chat template, size,
quantization), an .rkllm's tokenizer_config.json / chat_template.jinja / config.json. Capabilities
come from the chat template.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from rk.daemon.store import gguf_meta
from rk.daemon.store.models import Manifest
from rk.daemon.store.template_facts import from_template


def gguf_manifest(name: str, directory: Path, model: str, mmproj: str | None = None) -> Manifest:
    """A model on the llamacpp backend from a GGUF file at `directory / model`."""
    meta = gguf_meta.read(directory / model)
    files = {"gguf": model} | ({"mmproj": mmproj} if mmproj else {})
    params = {"pooling": meta.pooling} if meta.pooling else {}
    return Manifest(name=name, backend="llamacpp",
                    capabilities=("embedding",) if meta.embedding_only else from_template(meta.chat_template),
                    files=files, context_length=meta.context_length, family=meta.architecture,
                    parameter_size=meta.parameter_size, quantization=meta.quantization, format="gguf",
                    params=params, dir=directory)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def rkllm_manifest(name: str, directory: Path, model: str, tokenizer: str | None) -> Manifest:
    """A model on the rkllm backend, as `rk import` registers one, with the tokenizer it came with."""
    template: str | None = None
    family = ""
    if tokenizer is not None:
        tok = directory / tokenizer
        jinja = tok / "chat_template.jinja"
        template = jinja.read_text(errors="replace") if jinja.is_file() else None
        found = _json(tok / "tokenizer_config.json").get("chat_template")
        template = template or (found if isinstance(found, str) else None)
        family = str(_json(tok / "config.json").get("model_type") or "")
    files = {"model": model} | ({"tokenizer": tokenizer} if tokenizer else {})
    return Manifest(name=name, backend="rkllm", capabilities=from_template(template), files=files,
                    context_length=4096, family=family, format="rkllm", dir=directory)
