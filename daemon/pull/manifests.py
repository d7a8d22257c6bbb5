"""Manifests for model files that arrive whole (pulled from the hub or uploaded): GGUF or `.rkllm`.

What the file itself says is used: a GGUF's metadata (architecture, context, chat template, size,
quantization), an .rkllm's tokenizer_config.json / chat_template.jinja / config.json. Capabilities
come from the chat template.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from rk.daemon.capabilities import from_template
from rk.daemon.models import Manifest

GGUF_MAGIC = b"GGUF"
EMBED_ARCHES = frozenset({"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "modern-bert"})


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def _gguf_facts(path: Path) -> dict[str, Any]:
    """The metadata fields a manifest needs (gguf is imported here: only pulls and creates pay for it)."""
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.get_field(key)
        return field.contents() if field is not None else None

    arch = value("general.architecture") or ""
    ftype = value("general.file_type")
    quant = ""
    if isinstance(ftype, int):
        try:
            quant = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = ""
    return {"arch": arch, "context": value(f"{arch}.context_length"), "template": value("tokenizer.chat_template"),
            "size": value("general.size_label") or "", "quant": quant}


def gguf_manifest(name: str, directory: Path, model: str, mmproj: str | None = None) -> Manifest:
    """A model on the llamacpp backend from a GGUF file at `directory / model`."""
    facts = _gguf_facts(directory / model)
    embed = facts["arch"] in EMBED_ARCHES and not facts["template"]
    files = {"gguf": model} | ({"mmproj": mmproj} if mmproj else {})
    return Manifest(name=name, backend="llamacpp",
                    capabilities=("embedding",) if embed else from_template(facts["template"]), files=files,
                    context_length=int(facts["context"] or 2048), family=facts["arch"],
                    parameter_size=str(facts["size"]), quantization=facts["quant"], format="gguf", dir=directory)


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
