"""How large a context a model is loaded with: decided in the daemon, carried by the runner's `Load`.

A request's `options.num_ctx` wins, then the model's own `num_ctx` (Modelfile `PARAMETER num_ctx`),
then the server's `RK_CONTEXT_LENGTH`. A job that needs more than the resident context reloads the
model; a job that needs less runs on the one loaded (no reload ping-pong).
"""
from __future__ import annotations

import logging

from rk.daemon.backend_info import backend_info
from rk.daemon.errors import RkError
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.daemon.context")
MAX_CTX = 1 << 18  # 256k tokens: beyond this a typo, not a context (the KV cache alone would be tens of GB)


def configured_context(m: Manifest, default: int) -> int:
    """The context `m` loads with when a job names none: its own num_ctx, else the server default,
    never more than the model was trained for. An embedding model takes its whole window."""
    if not m.can("completion"):
        return m.context_length
    own = m.params.get("num_ctx") or m.defaults.get("num_ctx")
    if own:
        return bounded(m, int(own))
    return max(1, min(default, m.context_length))


def needed_context(m: Manifest, requested: int | None, default: int) -> int:
    """The context a chat job needs: its own `num_ctx` (bounded for the backend), else the configured one."""
    return bounded(m, requested) if requested else configured_context(m, default)


def bounded(m: Manifest, n: int) -> int:
    """`n` within what the backend can load; past the trained context (up to MAX_CTX) only where the
    backend extends it (`BackendInfo.extends_context`)."""
    info = backend_info(m.backend)
    if info is not None and info.extends_context:
        if n > m.context_length:
            log.warning("%s: a context of %d is past the %d it was trained with", m.name, n, m.context_length)
        return max(1, min(n, MAX_CTX))
    return max(1, min(n, m.context_length))


def prompt_too_large(name: str, tokens: int, context: int, param: str = "messages") -> RkError:
    """The error for a prompt that does not fit, with the three ways to make room."""
    return RkError("prompt_too_large", f"the prompt is {tokens} tokens but {name} is loaded with a context of "
                   f"{context}; raise it per request with options.num_ctx, per model with PARAMETER num_ctx in "
                   f"a Modelfile, or for the server with RK_CONTEXT_LENGTH", param=param)
