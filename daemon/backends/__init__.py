"""Backends compute: load a model, generate a token stream, embed a batch. They run only in runner processes.

Backends are registered by "module:function" name and imported on first use, so the daemon and the
CLI never import torch or a native runtime they do not need.
"""
from __future__ import annotations

import importlib
from typing import Callable

from rk.daemon.backends.base import LoadedModel, RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.models import Manifest

BACKENDS: dict[str, str] = {
    "hf": "rk.daemon.backends.hf:load",
    "llamacpp": "rk.daemon.backends.llamacpp:load",
    "rkllm": "rk.daemon.backends.rkllm:load",
    "synthetic": "rk.daemon.backends.synthetic:load",
}

# How each backend honours a request's `format` (structured output): "grammar" constrains decoding to
# the schema, so the reply is valid by construction; "validate" generates freely and the runner checks
# the reply against the schema, failing the job with the problem named. A backend not listed refuses
# `format` with a 400. Every reply with a format is checked in the runner either way.
STRUCTURED: dict[str, str] = {
    "hf": "grammar",  # llguidance (backends/constrained.py)
    "llamacpp": "grammar",  # llguidance over llama.cpp's vocabulary (backends/constrained.py)
    "rkllm": "validate",
    "synthetic": "validate",
}


def load_model(manifest: Manifest, config: RunnerConfig, num_ctx: int) -> LoadedModel:
    """Load `manifest` with the backend it names, with a context of `num_ctx` tokens (daemon/context.py)."""
    target = BACKENDS.get(manifest.backend)
    if target is None:
        raise RkError("model_failed", f"model {manifest.name}: unknown backend {manifest.backend!r}")
    module, _, func = target.partition(":")
    loader: Callable[[Manifest, RunnerConfig, int], LoadedModel] = getattr(importlib.import_module(module), func)
    return loader(manifest, config, num_ctx)


def preload(names: tuple[str, ...]) -> None:
    """Import backends ahead of their first load (a fresh runner's first reply then skips the import);
    a backend that cannot be imported is left for its load to report."""
    for name in names:
        target = BACKENDS.get(name)
        if target is not None:
            try:
                importlib.import_module(target.partition(":")[0])
            except Exception:  # reported by the load that needs it, as an error of that job
                pass
