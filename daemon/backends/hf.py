"""The `hf` backend: HuggingFace transformers on the CPU. Serves the bundled defaults with no download."""
from __future__ import annotations

import os

from rk.daemon.backends.base import LoadedModel, RunnerConfig
from rk.daemon.store.models import Manifest


def load(manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> LoadedModel:
    import torch

    torch.set_num_threads(config.cpu.threads or os.cpu_count() or 1)
    if "completion" not in manifest.capabilities:
        from rk.daemon.backends.hf_embed import HFEmbedModel

        return HFEmbedModel(manifest)
    from rk.daemon.backends.hf_chat import HFChatModel

    return HFChatModel(manifest, num_ctx)
