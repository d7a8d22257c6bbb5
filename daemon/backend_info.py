"""Facts about each backend, in one place: how a model is loaded, how `format` is honoured, whether its chat
models also embed, and whether its memory is an accelerator's. The daemon reads these facts without
importing any backend (they pull in torch or a native runtime, and only runner processes may)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BackendInfo:
    loader: str  # "module:function" that loads a model; imported on first use, in the runner only
    # How a request's `format` (structured output) is honoured: "grammar" constrains decoding to the schema,
    # so the reply is valid by construction; "validate" generates freely and the runner checks the reply,
    # failing the job with the problem named; None refuses `format` with a 400. Every reply is checked either way.
    structured: Literal["grammar", "validate"] | None
    embeds_from_chat: bool  # its chat models also serve embeddings (from the last hidden layer)
    accelerator: bool  # the model lives in an accelerator's memory (Ollama's `size_vram`)
    # It can run past the context the model was trained with (llama.cpp warns and extends RoPE, as Ollama
    # allows); elsewhere (hf's position table, RKLLM's converted max_context_len) num_ctx stops there.
    extends_context: bool = False


BACKENDS: dict[str, BackendInfo] = {
    "hf": BackendInfo("rk.daemon.backends.hf:load", "grammar", embeds_from_chat=True, accelerator=False),
    "llamacpp": BackendInfo("rk.daemon.backends.llamacpp:load", "grammar", embeds_from_chat=True, accelerator=False,
                            extends_context=True),
    "rkllm": BackendInfo("rk.daemon.backends.rkllm:load", "validate", embeds_from_chat=True, accelerator=True),
    "synthetic": BackendInfo("rk.daemon.backends.synthetic:load", "validate", embeds_from_chat=False, accelerator=False),
}


def backend_info(name: str) -> BackendInfo | None:
    return BACKENDS.get(name)
