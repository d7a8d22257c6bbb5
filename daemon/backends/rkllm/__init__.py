"""The `rkllm` backend: the RKLLM NPU runtime (librkllmrt.so) through ctypes.

Layers: `_lib` mirrors rkllm.h 1:1 (1.2.1+ and 1.3.0), `_version` finds the library and picks the ABI,
`_handle` owns one handle's lifetime, `backend` is the LoadedModel. Imported lazily by the registry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rk.daemon.backends.base import RunnerConfig
    from rk.daemon.backends.rkllm.backend import RkllmModel
    from rk.daemon.store.models import Manifest


def load(manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> RkllmModel:
    """Load a `.rkllm` model (see backend.load); numpy and ctypes are imported only here."""
    from rk.daemon.backends.rkllm.backend import load as _load

    return _load(manifest, config, num_ctx)
