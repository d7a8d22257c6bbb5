"""What a GGUF file says about itself (architecture, context, size, quantization, chat template, pooling),
for registering it (`rk import`, `/api/pull`, `/api/create`) and for reading its capabilities.

Read with the `gguf` package (llama.cpp's own reader, memory-mapped: only the header is touched).
A read takes a second or two on a board, so results are cached per file version.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rk.daemon.errors import RkError

MAGIC = b"GGUF"
# llama.cpp's `enum llama_pooling_type` as stored under `{arch}.pooling_type`.
POOLING_NAMES = {1: "mean", 2: "cls", 3: "last"}


@dataclass(frozen=True)
class GgufMeta:
    architecture: str
    context_length: int
    parameter_size: str  # "135M", from general.size_label or the tensors' parameter count
    quantization: str  # "Q4_1", from general.file_type
    chat_template: str | None
    pooling: str | None  # set for embedding models

    @property
    def embedding_only(self) -> bool:
        """An embedding model: it pools its states and has no chat template to answer with."""
        return self.pooling is not None and self.chat_template is None


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def read(path: Path) -> GgufMeta:
    """A GGUF header's facts; a file that is not GGUF is refused with `bad_request`."""
    stat = path.stat()
    return _read(str(path), stat.st_mtime_ns, stat.st_size)


def _value(field: Any) -> Any:
    """A scalar or string metadata value (arrays are not needed here)."""
    part = field.parts[field.data[0]]
    if len(field.types) == 1 and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8", "replace")
    return part.tolist()[0] if len(part) == 1 else part.tolist()


def _size_label(n: int) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


@functools.lru_cache(maxsize=32)
def _read(path: str, _mtime_ns: int, _size: int) -> GgufMeta:
    from gguf import GGUFReader, LlamaFileType  # numpy-only, but not needed by the CLI

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as e:
        raise RkError("bad_request", f"{path} is not a readable GGUF file: {e}") from None
    meta = {name: _value(f) for name, f in reader.fields.items() if f.data and not name.startswith("tokenizer.ggml.")}
    arch = str(meta.get("general.architecture", ""))
    size = meta.get("general.size_label") or _size_label(sum(int(t.n_elements) for t in reader.tensors))
    try:
        quant = LlamaFileType(int(meta["general.file_type"])).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError):
        quant = ""
    pooling = meta.get(f"{arch}.pooling_type")
    template = meta.get("tokenizer.chat_template")
    return GgufMeta(
        architecture=arch,
        context_length=int(meta.get(f"{arch}.context_length") or 2048),
        parameter_size=str(size),
        quantization=quant,
        chat_template=template if isinstance(template, str) and template else None,
        pooling=POOLING_NAMES.get(int(pooling)) if pooling is not None else None,
    )
