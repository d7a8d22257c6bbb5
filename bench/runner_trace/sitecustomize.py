"""Bench-only hook: with RK_BENCH_TRACE=FILE, every backend call in a runner process is timestamped.

The idle-gap benchmark puts this directory on the runner's PYTHONPATH, so Python imports this file
at start-up (before `rk.daemon.runner.child` runs), and it wraps `rk.daemon.backends.load_model`:
each loaded model's `generate` and `embed` append "start_ns end_ns" (time.monotonic_ns of entering
and leaving the backend) as one line to FILE. The gap between one call's end and the next call's
start is then exactly the accelerator's idle time, seen from the backend's side. No product code
changes; without the variable this file does nothing.
"""
from __future__ import annotations

import os

_PATH = os.environ.get("RK_BENCH_TRACE")

if _PATH:
    import time
    from typing import Any

    import rk.daemon.backends as _backends

    _fd = os.open(_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _load = _backends.load_model

    class _Traced:
        """A loaded model whose backend calls are timestamped; everything else passes through."""

        def __init__(self, model: Any) -> None:
            self._model = model

        def __getattr__(self, name: str) -> Any:
            return getattr(self._model, name)

        def _timed(self, fn: Any, *args: Any) -> Any:
            t0 = time.monotonic_ns()
            try:
                return fn(*args)
            finally:
                t1 = time.monotonic_ns()
                os.write(_fd, f"{t0} {t1}\n".encode())  # ~µs, and counted in the gap: errs on the safe side

        def generate(self, *args: Any) -> Any:
            return self._timed(self._model.generate, *args)

        def embed(self, *args: Any) -> Any:
            return self._timed(self._model.embed, *args)

    def _traced_load(*args: Any, **kwargs: Any) -> Any:
        return _Traced(_load(*args, **kwargs))

    _backends.load_model = _traced_load
