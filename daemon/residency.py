"""Which models are loaded in the runner, for how long, which failed, and when one must be reloaded.

A resident model remembers the manifest it was loaded from: when `/api/create`, a copy or a delete
changes that manifest on disk, the next job reloads it instead of answering with stale parameters.
It also remembers its context: a job that needs a larger one reloads it (daemon/context.py).
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rk.daemon.context import configured_context
from rk.daemon.errors import RkError
from rk.daemon.runner.proxy import RunnerPort
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.daemon.residency")
MAX_LOAD_CRASHES = 3


@dataclass
class Resident:
    """A model loaded in the runner."""

    manifest: Manifest
    loaded_at: float
    memory_mb: float
    num_ctx: int  # the context it was loaded with, tokens
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own facts, e.g. CPU threads
    expires: float = math.inf  # monotonic time; inf = kept until unloaded
    wall_expires: float = math.inf
    jobs: int = 0  # jobs started on it since it was loaded

    @property
    def name(self) -> str:
        return self.manifest.name


class Residency:
    def __init__(self, runner: RunnerPort, default_keep_alive_s: float, default_ctx: int) -> None:
        self.runner = runner
        self.default_keep_alive_s = default_keep_alive_s
        self.default_ctx = default_ctx  # RK_CONTEXT_LENGTH
        self.loaded: dict[str, Resident] = {}
        self.failed: dict[str, str] = {}
        self._crashes: Counter[str] = Counter()
        self._pid: int | None = None
        self.safe: set[str] = set()  # models that crashed the engine: loaded with safe settings until unloaded

    def check_usable(self, m: Manifest) -> None:
        if m.name in self.failed:
            raise RkError("model_failed", f"{m.name} failed to load: {self.failed[m.name]} (an explicit load retries it)")

    def sync(self) -> None:
        """A new runner process starts empty: forget what the old one had loaded."""
        if self.runner.pid != self._pid:
            self.loaded.clear()
            self._pid = self.runner.pid

    def is_loaded(self, m: Manifest, need: int | None = None) -> bool:
        """Loaded from this very manifest (a changed manifest counts as not loaded), with a context of at
        least `need` tokens (None: any)."""
        self.sync()
        res = self.loaded.get(m.name)
        return res is not None and res.manifest.digest == m.digest and res.num_ctx >= (need or 0)

    async def ensure(self, m: Manifest, need: int | None = None) -> float:
        """Load `m` unless it is resident as is with a context of at least `need` tokens (None: any; a
        fresh load takes the model's configured one); returns the load time in ms (0 when already loaded)."""
        if self.is_loaded(m, need):
            return 0.0
        num_ctx = need or configured_context(m, self.default_ctx)
        if (res := self.loaded.get(m.name)) is not None:
            why = ("its manifest changed" if res.manifest.digest != m.digest
                   else f"a job needs a context of {need} tokens, it was loaded with {res.num_ctx}")
            log.info("reloading %s: %s", m.name, why)
            await self.unload(m.name)
        try:
            ev = await self.runner.load(m, num_ctx, safe=m.name in self.safe)
        except RkError as e:
            if e.code in ("runner_crashed", "timeout"):
                self._crashes[m.name] += 1
                if self._crashes[m.name] >= MAX_LOAD_CRASHES:
                    self.failed[m.name] = e.message
                    log.error("model %s marked failed after %d crashed loads", m.name, MAX_LOAD_CRASHES)
            raise
        self._crashes.pop(m.name, None)
        self.failed.pop(m.name, None)  # a load that worked clears an earlier failure
        self._pid = self.runner.pid
        self.loaded[m.name] = Resident(m, time.time(), ev.memory_mb, num_ctx, ev.details)
        log.info("loaded %s (%s, context %d) in %.0f ms, %.0f MB", m.name, m.backend, num_ctx, ev.ms, ev.memory_mb)
        return ev.ms

    async def unload(self, name: str) -> None:
        self.sync()
        self.safe.discard(name)
        if self.loaded.pop(name, None) is not None:
            await self.runner.unload(name)

    def start_job(self, name: str) -> bool:
        """Count a job on a resident model; True for its first since it was loaded."""
        res = self.loaded.get(name)
        if res is None:
            return False
        res.jobs += 1
        return res.jobs == 1

    def touch(self, name: str, keep_alive_s: float | None) -> None:
        """Restart a model's keep-alive clock after a job (negative: forever; 0: unload now)."""
        res = self.loaded.get(name)
        if res is None:
            return
        ka = self.default_keep_alive_s if keep_alive_s is None else keep_alive_s
        if ka < 0:
            res.expires = res.wall_expires = math.inf
        else:
            res.expires = time.monotonic() + ka
            res.wall_expires = time.time() + ka

    def stays_loaded(self, name: str, keep_alive_s: float | None) -> bool:
        ka = self.default_keep_alive_s if keep_alive_s is None else keep_alive_s
        return name in self.loaded and ka != 0

    async def unload_expired(self) -> None:
        now = time.monotonic()
        for name in [n for n, r in self.loaded.items() if r.expires <= now]:
            try:
                await self.unload(name)
            except RkError as e:
                log.warning("unloading %s failed: %s", name, e.message)

    def next_expiry_in(self) -> float | None:
        """Seconds until the next keep-alive runs out, or None when none will."""
        nearest = min((r.expires for r in self.loaded.values()), default=math.inf)
        return None if nearest == math.inf else max(0.0, nearest - time.monotonic())
