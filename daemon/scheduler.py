"""ONE first-in-first-out queue for every job from every protocol, and the residency of models in the runner.

A job's place is fixed at arrival; its position (jobs ahead of it, the running ones included, + 1)
is pushed to it whenever it changes. The runner runs one command at a time; the next chat's command is
sent ahead while the current one generates, so the accelerator never waits on the daemon between jobs. Embedding work is cut into
slices that go back to the tail, and consecutive embedding jobs for the same model at the head of
the queue share one runner call, so FIFO order as clients see it never changes.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np

from rk.daemon.errors import RkError
from rk.daemon.events import Done, Failed, Loading, Prefill, Queued, Started, Token, Vectors
from rk.daemon.jobs import ChatJob, EmbedJob, Job, ModelAction
from rk.daemon.models import ModelStore
from rk.daemon.runner import Runner
from rk.daemon.settings import Settings
from rk.daemon.ticket import Resident, Ticket

log = logging.getLogger("rk.daemon.scheduler")
MAX_LOAD_CRASHES = 3
SEND_AHEAD = 2  # chat commands queued in the runner beyond the running one


class Scheduler:
    def __init__(self, settings: Settings, store: ModelStore, runner: Runner) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self.waiting: deque[Ticket] = deque()
        self.running: list[Ticket] = []
        self.loaded: dict[str, Resident] = {}
        self.failed_models: dict[str, str] = {}
        self.totals: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=20)
        self.started_at = time.time()
        self.observers: list[Callable[[Ticket, RkError | None], None]] = []  # told of every finished job
        self._tickets: dict[str, Ticket] = {}
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._watchers: set[asyncio.Event] = set()
        self._load_crashes: Counter[str] = Counter()
        self.closing = False

    # ---- arrival, cancel, lookup -------------------------------------------------------------

    def submit(self, job: Job, client_id: str = "") -> Ticket:
        """Queue a job, or refuse it at once with a clear error; the ticket's first event is its position."""
        if self.closing:
            raise RkError("shutting_down", "the daemon is shutting down")
        if len(self.waiting) >= self.settings.max_queue:
            raise RkError("queue_full", f"the queue is full ({self.settings.max_queue} jobs waiting); retry later")
        manifest = self.store.get(job.model)
        if isinstance(job, EmbedJob) and not manifest.embeds:
            raise RkError("not_embedding_model", f"{manifest.name} is a chat model; embed with an embedding model such as {self.settings.default_embed_model}", param="model")
        if isinstance(job, ChatJob) and manifest.kind != "chat":
            raise RkError("not_chat_model", f"{manifest.name} is an embedding model and cannot chat; try {self.settings.default_chat_model}", param="model")
        if isinstance(job, EmbedJob) and not job.texts:
            raise RkError("empty_input", "no texts to embed", param="input")
        if manifest.name in self.failed_models and not isinstance(job, ModelAction):
            raise RkError("model_failed", f"{manifest.name} failed to load: {self.failed_models[manifest.name]}")
        t = Ticket(id=f"j{next(self._ids)}", job=job, manifest=manifest, client_id=client_id,
                   arrived=time.monotonic())
        self._tickets[t.id] = t
        self.waiting.append(t)
        self.totals["accepted"] += 1
        self._reposition()
        self._wake.set()
        return t

    def get(self, ticket_id: str) -> Ticket | None:
        return self._tickets.get(ticket_id)

    def cancel(self, ticket_id: str, reason: str = "cancelled") -> bool:
        """Remove a waiting job at once, or abort a running one; False if it is unknown or finished."""
        t = self._tickets.get(ticket_id)
        if t is None or t.finished:
            return False
        if t in self.waiting:
            self.waiting.remove(t)
            self._finish(t, RkError("cancelled", reason))
            self._reposition()
        elif t in self.running:
            t.cancel_requested = True
            if len(self.running) == 1:
                self.runner.cancel(t.sent)
            else:  # one job of a shared embedding batch: drop its share, let the others finish
                self._finish(t, RkError("cancelled", reason))
        return True

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run jobs in order, forever; between jobs, unload models whose keep-alive ran out."""
        timers = asyncio.create_task(self._timers())
        try:
            while True:
                await self._unload_expired()
                if not self.waiting:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                    except asyncio.TimeoutError:
                        pass
                    continue
                batch = self._take()
                try:
                    await self._execute(batch)
                except Exception as e:  # a bug here must not stop the queue
                    log.exception("job failed unexpectedly")
                    for t, _, _ in batch:
                        self._finish(t, RkError("internal", f"internal error: {e}"))
                finally:
                    self.running = []
                    self._reposition()
        finally:
            timers.cancel()

    def _take(self) -> list[tuple[Ticket, int, int]]:
        """The head job, plus, for embeddings, following jobs for the same model up to one slice of texts."""
        head = self.waiting.popleft()
        if not isinstance(head.job, EmbedJob):
            batch = [(head, 0, 0)]
        else:
            room = self.settings.embed_slice
            batch = []
            while True:
                t = head
                end = min(t.total, t.cursor + room)
                batch.append((t, t.cursor, end))
                room -= end - t.cursor
                nxt = self.waiting[0] if self.waiting else None
                if (room <= 0 or end < t.total or nxt is None or not isinstance(nxt.job, EmbedJob)
                        or nxt.manifest.name != head.manifest.name):
                    break
                head = self.waiting.popleft()
        self.running = [t for t, _, _ in batch]
        now = time.monotonic()
        for t, _, _ in batch:
            if t.started is None:
                t.started = now
                t.stats.wait_ms = (now - t.arrived) * 1000
                t.emit(Started())
        self._reposition()
        return batch

    async def _execute(self, batch: list[tuple[Ticket, int, int]]) -> None:
        lead = batch[0][0]
        try:
            load_ms = await self._ensure_loaded(lead)
            if lead.cancel_requested:  # cancelled while its model loaded: nothing to abort in the runner
                raise RkError("cancelled", "cancelled")
            for t, _, _ in batch:
                t.stats.load_ms += load_ms
            if isinstance(lead.job, ChatJob):
                await self._generate(lead)
            elif isinstance(lead.job, EmbedJob):
                await self._embed(batch)
            else:
                await self._model_action(lead, load_ms)
        except RkError as e:
            for t, _, _ in batch:
                if lead.timed_out and e.code == "cancelled":
                    e = RkError("timeout", f"the job ran longer than {self.settings.job_timeout_s:.0f} s")
                self._finish(t, e)
        self._touch(lead)

    async def _ensure_loaded(self, t: Ticket) -> float:
        if self.runner.pid is None:
            self.loaded.clear()  # a new runner process starts empty
        m = t.manifest
        if m.name in self.loaded or (isinstance(t.job, ModelAction) and t.job.action == "unload"):
            return 0.0
        t.state = "loading"
        t.emit(Loading(m.name))
        self._changed()
        try:
            ev = await self.runner.call({"op": "load", "manifest": m.to_dict(), "dir": str(m.dir)})
        except RkError as e:
            if e.code in ("runner_crashed", "timeout"):
                self._load_crashes[m.name] += 1
                if self._load_crashes[m.name] >= MAX_LOAD_CRASHES:
                    self.failed_models[m.name] = e.message
                    log.error("model %s marked failed after %d crashed loads", m.name, MAX_LOAD_CRASHES)
            raise
        self._load_crashes.pop(m.name, None)
        self.loaded[m.name] = Resident(m.name, m.backend, time.time(), float(ev.get("memory_mb") or 0.0),
                                       dict(ev.get("details") or {}))
        return float(ev["ms"])

    async def _generate(self, t: Ticket) -> None:
        assert isinstance(t.job, ChatJob)
        t.state = "prefill"
        self._changed()

        def on_event(ev: dict[str, Any]) -> None:
            if t.finished:
                return
            if ev["ev"] == "prefill":
                t.stats.prefill_ms, t.stats.prefill_tokens = float(ev["ms"]), int(ev["tokens"])
                t.state = "generating"
                t.emit(Prefill(t.stats.prefill_ms, t.stats.prefill_tokens))
            else:
                t.generated += 1
                t.emit(Token(ev["text"]))
            self._changed()

        ref = t.sent if t.sent is not None and self.runner.is_live(t.sent) else await self.runner.send(self._generate_cmd(t))
        t.sent = ref
        self._send_ahead(t)
        timer = self._job_timer(t)
        try:
            final = await self.runner.result(ref, on_event)
        finally:
            if timer is not None:
                timer.cancel()
        r = final["result"]
        s = t.stats
        s.prefill_ms, s.prefill_tokens = float(r["prefill_ms"]), int(r["prefill_tokens"])
        s.generate_ms, s.generate_tokens = float(r["generate_ms"]), int(r["generate_tokens"])
        s.prompt_tokens = int(r.get("prompt_tokens") or s.prefill_tokens)
        s.cached_tokens = int(r.get("cached_tokens") or 0)
        s.memory_mb = float(r.get("memory_mb") or 0.0) or self.runner.rss_mb()
        s.finish_reason = r.get("finish_reason", "stop")
        self._finish(t, None)

    @staticmethod
    def _generate_cmd(t: Ticket) -> dict[str, Any]:
        assert isinstance(t.job, ChatJob)
        return {"op": "generate", "model": t.manifest.name, "req": t.job.wire()}

    def _send_ahead(self, current: Ticket) -> None:
        """Queue the next chats' commands in the runner now, so each starts the moment the one before ends.

        Only chats on the same, resident model that stays loaded after each job, and at most
        SEND_AHEAD of them: the runner then never waits on the daemon between jobs, even short ones.
        The jobs keep their places and positions in the queue; cancelling one makes the runner skip it.
        """
        prev = current
        for nxt in itertools.islice(self.waiting, SEND_AHEAD):
            if (not isinstance(nxt.job, ChatJob) or nxt.manifest.name != current.manifest.name
                    or prev.job.keep_alive_s == 0 or nxt.manifest.name not in self.loaded or self.runner.pid is None):
                return
            if nxt.sent is None or not self.runner.is_live(nxt.sent):
                nxt.sent = self.runner.send_nowait(self._generate_cmd(nxt))
            prev = nxt

    async def _embed(self, batch: list[tuple[Ticket, int, int]]) -> None:
        texts: list[str] = []
        for t, start, end in batch:
            assert isinstance(t.job, EmbedJob)
            t.state = "embedding"
            texts.extend(t.job.texts[start:end])
        self._changed()
        lead = batch[0][0]
        t0 = time.perf_counter()
        ref = await self.runner.send({"op": "embed", "model": lead.manifest.name, "texts": texts,
                                      "truncate": all(t.job.truncate for t, _, _ in batch)})  # type: ignore[union-attr]
        for t, _, _ in batch:
            t.sent = ref
        timer = self._job_timer(lead) if len(batch) == 1 else None
        try:
            final = await self.runner.result(ref)
        finally:
            if timer is not None:
                timer.cancel()
            for t, _, _ in batch:
                t.sent = None  # a re-queued slice gets a new command next time
        ms = (time.perf_counter() - t0) * 1000
        vectors = np.frombuffer(base64.b64decode(final["data"]), dtype="<f4").reshape(final["shape"])
        tokens: list[int] = final["tokens"]
        offset = 0
        for t, start, end in batch:
            n = end - start
            share = vectors[offset:offset + n]
            ntok = int(sum(tokens[offset:offset + n]))
            offset += n
            if t.cancel_requested:  # a slice cannot be interrupted; its vectors go to no one
                self._finish(t, RkError("cancelled", "cancelled"))
            if t.finished:
                continue
            t.emit(Vectors(start, share, ntok))
            t.stats.extra["batch_jobs"] = max(len(batch), t.stats.extra.get("batch_jobs", 1))
            t.cursor = end
            t.stats.prompt_tokens += ntok
            t.stats.prefill_tokens += ntok
            t.stats.prefill_ms += ms * n / max(1, len(texts))
            if t.cursor >= t.total:
                t.stats.memory_mb = self.runner.rss_mb()
                self._finish(t, None)
            else:
                t.state = "waiting"
                self.waiting.append(t)  # the rest waits its turn again: chats typed meanwhile go first

    async def _model_action(self, t: Ticket, load_ms: float) -> None:
        assert isinstance(t.job, ModelAction)
        if t.job.action == "unload":
            await self._unload(t.manifest.name)
        t.stats.load_ms = load_ms
        self._finish(t, None)

    def _job_timer(self, t: Ticket) -> asyncio.TimerHandle | None:
        limit = self.settings.job_timeout_s
        if limit <= 0:
            return None

        def fire() -> None:
            t.timed_out = True
            self.runner.cancel(t.sent)

        return asyncio.get_running_loop().call_later(limit, fire)

    # ---- residency ---------------------------------------------------------------------------

    def _touch(self, t: Ticket) -> None:
        """Restart the keep-alive clock of the job's model after the job."""
        res = self.loaded.get(t.manifest.name)
        if res is None:
            return
        ka = t.job.keep_alive_s
        ka = self.settings.keep_alive_s if ka is None else ka
        if ka < 0:
            res.expires = res.wall_expires = math.inf
        else:
            res.expires = time.monotonic() + ka
            res.wall_expires = time.time() + ka

    async def _unload(self, name: str) -> None:
        if self.loaded.pop(name, None) is not None and self.runner.pid is not None:
            await self.runner.call({"op": "unload", "model": name})
        self._changed()

    async def _unload_expired(self) -> None:
        if self.waiting and self.waiting[0].sent is not None:
            return  # the next job's command is already in the runner; unload after it
        now = time.monotonic()
        for name in [n for n, r in self.loaded.items() if r.expires <= now]:
            try:
                await self._unload(name)
            except RkError as e:
                log.warning("unloading %s failed: %s", name, e.message)

    def _idle_timeout(self) -> float | None:
        nearest = min((r.expires for r in self.loaded.values()), default=math.inf)
        return None if nearest == math.inf else max(0.0, nearest - time.monotonic())

    async def _timers(self) -> None:
        """Fail jobs that waited longer than the queue timeout."""
        limit = self.settings.queue_timeout_s
        if limit <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            expired = [t for t in self.waiting if t.started is None and now - t.arrived > limit]
            for t in expired:
                self.waiting.remove(t)
                self._finish(t, RkError("timeout", f"waited more than {limit:.0f} s in the queue"))
            if expired:
                self._reposition()

    # ---- bookkeeping -------------------------------------------------------------------------

    def _finish(self, t: Ticket, error: RkError | None) -> None:
        if t.finished:
            return
        if t.sent is not None and t not in self.running:
            self.runner.discard(t.sent)  # sent ahead, never begun: the runner skips it
        s = t.stats
        s.total_ms = (time.monotonic() - t.arrived) * 1000
        if error is None:
            self.totals["done"] += 1
            self.totals["tokens"] += s.generate_tokens
            self.totals["prompt_tokens"] += s.prompt_tokens
            t.emit(Done(s))
        else:
            outcome = "cancelled" if error.code == "cancelled" else "errors"
            self.totals[outcome] += 1
            self.totals[f"error:{error.code}"] += 1
            t.emit(Failed(error))
        self.recent.appendleft({
            "id": t.id, "kind": t.kind, "model": t.manifest.name, "source": t.job.source,
            "outcome": "done" if error is None else error.code, **s.to_dict(),
        })
        self._tickets.pop(t.id, None)
        for observe in self.observers:
            observe(t, error)
        self._changed()

    def _reposition(self) -> None:
        ahead = len(self.running)
        for i, t in enumerate(self.waiting):
            pos = ahead + i + 1
            if pos != t.position:
                t.position = pos
                t.emit(Queued(pos))
        self._changed()

    def _changed(self) -> None:
        for w in self._watchers:
            w.set()

    def watch(self) -> asyncio.Event:
        """An event set whenever the queue's state changes; `unwatch` it when done."""
        ev = asyncio.Event()
        self._watchers.add(ev)
        return ev

    def unwatch(self, ev: asyncio.Event) -> None:
        self._watchers.discard(ev)

    # ---- shutdown and status -----------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Refuse new jobs, cancel the waiting ones, let the running one finish within `grace_s`, then abort it."""
        self.closing = True
        for t in list(self.waiting):
            self._finish(t, RkError("cancelled", "the daemon is shutting down"))
        self.waiting.clear()
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in list(self.running):
            self.cancel(t.id, "the daemon is shutting down")
        deadline = time.monotonic() + 2.0
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in list(self.running):
            self._finish(t, RkError("cancelled", "the daemon is shutting down"))
        await self.runner.stop()

    def describe(self, t: Ticket) -> dict[str, Any]:
        now = time.monotonic()
        d: dict[str, Any] = {
            "id": t.id, "client_id": t.client_id, "kind": t.kind, "model": t.manifest.name,
            "source": t.job.source, "peer": t.job.peer, "state": t.state, "position": t.position,
            "waited_ms": round(((t.started or now) - t.arrived) * 1000, 1),
        }
        if isinstance(t.job, EmbedJob):
            d["progress"] = {"done": t.cursor, "total": t.total, "unit": "texts"}
        elif isinstance(t.job, ChatJob):
            d["progress"] = {"done": t.generated, "total": t.job.options.max_tokens, "unit": "tokens"}
            if t.state == "generating" and t.started is not None and t.generated:
                elapsed = now - t.started - t.stats.prefill_ms / 1000 - t.stats.load_ms / 1000
                d["tokens_per_s"] = round(t.generated / elapsed, 2) if elapsed > 0 else None
        return d

    def snapshot(self) -> dict[str, Any]:
        """The queue, the running jobs, loaded models and totals: what `status`, `rk ps` and `rk top` show."""
        now_wall, now = time.time(), time.monotonic()
        return {
            "queue": [self.describe(t) for t in self.running] + [self.describe(t) for t in self.waiting],
            "depth": len(self.waiting),
            "running": [t.id for t in self.running],
            "loaded": [{
                "name": r.name, "backend": r.backend, "memory_mb": round(r.memory_mb, 1),
                "loaded_at": r.loaded_at, **r.details,
                "expires_at": None if r.expires == math.inf else now_wall + (r.expires - now),
            } for r in self.loaded.values()],
            "failed_models": dict(self.failed_models),
            "totals": dict(self.totals) | {"runner_restarts": self.runner.restarts},
            "recent": list(self.recent),
            "uptime_s": round(now_wall - self.started_at, 1),
            "runner": {"pid": self.runner.pid, "rss_mb": round(self.runner.rss_mb(), 1)},
        }
