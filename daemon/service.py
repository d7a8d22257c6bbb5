"""The daemon's shared parts, built once and handed to every listener and adapter."""
from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from rk import __version__
from rk.daemon.backends.base import CpuOptions, RkllmOptions, RunnerConfig
from rk.daemon.backends.cpufeatures import choose_repack, read_cpu_features
from rk.daemon.deadlines import HeadDeadlines
from rk.daemon.errors import RkError
from rk.daemon.metrics import Metrics
from rk.daemon.npu import read_npu, soc
from rk.daemon.runner.proxy import Runner, RunnerPort
from rk.daemon.scheduler import Scheduler
from rk.daemon.settings import Settings
from rk.daemon.store.models import Manifest, ModelStore, modified_at
from rk.daemon.store.pull.manager import PullManager
from rk.protocol import Snapshot


def runner_config(settings: Settings, store: ModelStore) -> RunnerConfig:
    """The runner's sections of the settings, and the default chat model's backend to import while idle."""
    try:
        preload: tuple[str, ...] = (store.get(settings.default_chat_model).backend,)
    except RkError:
        preload = ()
    return RunnerConfig(sysfs_root=str(settings.sysfs_root),
                        cpu=CpuOptions(threads=settings.threads, repack=settings.llama_repack),
                        rkllm=RkllmOptions(lib=settings.rkllm_lib, version=settings.rkllm_version), preload=preload)


@dataclass
class Service:
    settings: Settings
    store: ModelStore
    runner: RunnerPort
    scheduler: Scheduler
    head_deadlines: HeadDeadlines
    metrics: Metrics
    pulls: PullManager
    started: float = field(default_factory=time.time)
    version: str = __version__
    tcp_address: str | None = None  # where TCP is bound once listening (`--tcp HOST:0` picks a free port)
    llama_repack: str = ""  # RK_LLAMA_REPACK as it applies to this CPU, e.g. "off (cpu has AMX)"
    agent_addr: str | None = None  # where the agent-check port listens, once bound
    _npu: tuple[float, dict[str, Any]] = field(default=(0.0, {}), init=False, repr=False)

    @classmethod
    def build(cls, settings: Settings, runner: RunnerPort | None = None) -> Service:
        """The daemon's parts; `runner` replaces the runner process (tests build the whole HTTP and
        line-protocol stack over an in-process one)."""
        store = ModelStore(settings.models_dir, bundled=settings.bundled)
        if runner is None:
            runner = Runner(runner_config(settings, store), stall_timeout_s=settings.stall_timeout_s)
        scheduler = Scheduler(settings, store, runner)
        metrics = Metrics(scheduler.status, settings.metrics_compat)
        scheduler.observers.append(metrics.observe)
        return cls(settings, store, runner, scheduler, HeadDeadlines(settings.header_timeout_s), metrics,
                   PullManager(store, soc(settings.sysfs_root)),
                   llama_repack=str(choose_repack(settings.llama_repack, read_cpu_features(settings.sysfs_root))))

    def key_ok(self, presented: str | None) -> bool:
        """Constant-time check of an API key; always true when no key is configured."""
        want = self.settings.api_key
        if not want:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), want.encode())

    def model_info(self, m: Manifest, status: Snapshot) -> dict[str, Any]:
        """A model as `models` and `rk models` describe it."""
        res = status.loaded_model(m.name)
        return {
            "name": m.name, "capabilities": list(m.capabilities), "backend": m.backend, "size": m.size,
            "context_length": m.context_length, "details": m.details(), "modified_at": modified_at(m),
            "bundled": m.bundled, "loaded": res is not None,
            "memory_mb": res.memory_mb if res else None,
            "failed": status.failed_models.get(m.name),
            "default": [job for job, name in (("chat", self.settings.default_chat_model),
                                              ("embed", self.settings.default_embed_model)) if name.lower() == m.name.lower()],
        }

    def npu(self) -> dict[str, Any]:
        """NPU figures, read at most twice a second however many watchers ask."""
        at, value = self._npu
        now = time.monotonic()
        if now - at > 0.5:
            value = read_npu(self.settings.sysfs_root)
            self._npu = (now, value)
        return value

    def status(self) -> Snapshot:
        """The scheduler's snapshot with the daemon-wide facts: version, where it listens, pulls, NPU."""
        return msgspec.structs.replace(
            self.scheduler.status(), version=self.version, pid=os.getpid(), socket=str(self.settings.socket),
            tcp=self.tcp_address, agent=self.agent_addr, npu=self.npu(), llama_repack=self.llama_repack,
            pulls=self.pulls.describe())
