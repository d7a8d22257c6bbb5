"""Backends compute: load a model, generate a token stream, embed a batch. They run only in runner processes.

Backends are described in `rk.daemon.backend_info` (their loader by "module:function" name) and imported on
first use, so the daemon and the CLI never import torch or a native runtime they do not need.
"""
from __future__ import annotations

import importlib
from typing import Callable

from rk.daemon.backend_info import backend_info
from rk.daemon.backends.base import LoadedModel, RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.store.models import Manifest


def load_model(manifest: Manifest, config: RunnerConfig, num_ctx: int) -> LoadedModel:
    """Load `manifest` with the backend it names, with a context of `num_ctx` tokens (daemon/context.py)."""
    info = backend_info(manifest.backend)
    if info is None:
        raise RkError("model_failed", f"model {manifest.name}: unknown backend {manifest.backend!r}")
    module, _, func = info.loader.partition(":")
    loader: Callable[[Manifest, RunnerConfig, int], LoadedModel] = getattr(importlib.import_module(module), func)
    return loader(manifest, config, num_ctx)


def preload(names: tuple[str, ...]) -> None:
    """Import backends ahead of their first load (a fresh runner's first reply then skips the import);
    a backend that cannot be imported is left for its load to report."""
    for name in names:
        info = backend_info(name)
        if info is not None:
            try:
                importlib.import_module(info.loader.partition(":")[0])
            except Exception:  # noqa: BLE001 - a backend's import may raise anything; its load reports it, as that job's error
                pass
