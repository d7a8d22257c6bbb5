"""The daemon's shared parts, built once and handed to every listener and adapter."""
from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from typing import Any

from rk import __version__
from rk.daemon.backends.base import RunnerConfig
from rk.daemon.deadlines import HeadDeadlines
from rk.daemon.errors import RkError
from rk.daemon.metrics import Metrics
from rk.daemon.models import Manifest, ModelStore, modified_at
from rk.daemon.npu import read_npu
from rk.daemon.runner import Runner
from rk.daemon.scheduler import Scheduler
from rk.daemon.settings import Settings


@dataclass
class Service:
    settings: Settings
    store: ModelStore
    runner: Runner
    scheduler: Scheduler
    head_deadlines: HeadDeadlines
    metrics: Metrics
    started: float = field(default_factory=time.time)
    version: str = __version__
    _npu: tuple[float, dict[str, Any]] = field(default=(0.0, {}), init=False, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> "Service":
        store = ModelStore(settings.models_dir, bundled=settings.bundled)
        runner = Runner(RunnerConfig(threads=settings.threads, rkllm_lib=settings.rkllm_lib,
                                     rkllm_version=settings.rkllm_version, sysfs_root=str(settings.sysfs_root),
                                     preload=default_backends(store, settings)),
                        stall_timeout_s=settings.stall_timeout_s)
        scheduler = Scheduler(settings, store, runner)
        return cls(settings, store, runner, scheduler, HeadDeadlines(settings.header_timeout_s), Metrics(scheduler))

    def key_ok(self, presented: str | None) -> bool:
        """Constant-time check of an API key; always true when no key is configured."""
        want = self.settings.api_key
        if not want:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), want.encode())

    def model_info(self, m: Manifest) -> dict[str, Any]:
        """A model as `models` and `rk models` describe it."""
        res = self.scheduler.loaded.get(m.name)
        return {
            "name": m.name, "kind": m.kind, "backend": m.backend, "size": m.size,
            "context_length": m.context_length, "details": m.details(), "modified_at": modified_at(m),
            "bundled": m.bundled, "loaded": res is not None,
            "memory_mb": round(res.memory_mb, 1) if res else None,
            "failed": self.scheduler.failed_models.get(m.name),
            "default": m.name in (self.settings.default_chat_model, self.settings.default_embed_model),
        }

    def npu(self) -> dict[str, Any]:
        """NPU figures, read at most twice a second however many watchers ask."""
        at, value = self._npu
        now = time.monotonic()
        if now - at > 0.5:
            value = read_npu(self.settings.sysfs_root)
            self._npu = (now, value)
        return value

    def status(self) -> dict[str, Any]:
        return self.scheduler.snapshot() | {"version": self.version, "pid": os.getpid(),
                                            "socket": str(self.settings.socket), "tcp": self.settings.tcp,
                                            "npu": self.npu()}


def default_backends(store: ModelStore, settings: Settings) -> tuple[str, ...]:
    """The default chat model's backend, for the runner to import while idle (not a load: no weights)."""
    try:
        return (store.get(settings.default_chat_model).backend,)
    except RkError:
        return ()
