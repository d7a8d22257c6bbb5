"""Runs the one queue's jobs on the runner, in order: admission (capabilities), execution, accounting.

The queue (`queue.py`) orders tickets, residency (`residency.py`) keeps models loaded, the runner
(`runner/`) computes; this module decides what runs next and turns runner events into job events.
The next chats' commands are sent ahead while the current one generates, so the accelerator never
waits on the daemon between jobs. Embedding work is cut into slices that go back to the tail, and
consecutive embedding jobs for one model at the head of the queue share one runner call.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from typing import Callable

from rk.daemon import events as ev
from rk.daemon.backend_info import backend_info
from rk.daemon.backends.base import SAFE_SETTINGS
from rk.daemon.busy import JobTimes, retry_after_s
from rk.daemon.errors import RkError
from rk.daemon.jobs import ChatJob, EmbedJob, Job, ModelAction
from rk.daemon.queue import JobQueue
from rk.daemon.residency import Residency
from rk.daemon.resolve import resolve
from rk.daemon.runner import wire
from rk.daemon.runner.proxy import Crashed, NotBegun, RunnerPort
from rk.daemon.settings import Settings
from rk.daemon.status import job_view, loaded_view, recent_job
from rk.daemon.store.models import Manifest, ModelStore
from rk.daemon.structured import schema_for
from rk.daemon.ticket import Ticket
from rk.protocol import LoadView, RecentJob, RunnerView, Snapshot

log = logging.getLogger("rk.daemon.scheduler")
SEND_AHEAD = 2  # chat commands queued in the runner beyond the running one
MAX_RETRIES = 2
BACKLOG_CAP = 8  # unread events a job may hold, in multiples of the client backlog, before it is stopped at once


def required_capabilities(job: Job) -> list[tuple[str, str]]:
    """(capability, what needs it) pairs a job needs from its model."""
    if isinstance(job, EmbedJob):
        return [("embedding", "embeddings")]
    if not isinstance(job, ChatJob):
        return []
    spec = job.spec
    need = [("completion", "chat")]
    if spec.tools and spec.tool_choice != "none":
        need.append(("tools", "tools"))
    if spec.think not in (None, False):
        need.append(("thinking", "thinking"))
    if any(m.images for m in spec.messages):
        need.append(("vision", "images"))
    return need


class Scheduler:
    def __init__(self, settings: Settings, store: ModelStore, runner: RunnerPort) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self.queue = JobQueue(settings.max_queue)
        self.residency = Residency(runner, settings.keep_alive_s, settings.context_length)
        self.totals: Counter[str] = Counter()
        self.recent: deque[RecentJob] = deque(maxlen=20)
        self.started_at = time.time()
        self.observers: list[Callable[[Ticket, RkError | None], None]] = []  # told of every finished job
        self.closing = False
        self.draining = False  # `rk drain`: the agent-check port tells balancers to send nothing new
        self.job_times = JobTimes()

    # ---- arrival, cancel, lookup -------------------------------------------------------------

    def submit(self, job: Job, client_id: str = "") -> Ticket:
        """Queue a job, or refuse it at once with a clear error; the ticket's first event is its position."""
        if self.closing:
            raise RkError("shutting_down", "the daemon is shutting down")
        manifest = self.store.get(job.model)
        self.admit(job, manifest)
        if isinstance(job, ChatJob):
            job = resolve(job, manifest, self.settings.context_length)
        self._check_client_cap(client_id)
        try:
            t = self.queue.add(job, manifest, client_id)
        except RkError as e:  # queue_full: when to come back, and 429 for routers that cool down on it
            raise RkError(e.code, e.message, status=self.settings.queue_full_status,
                          retry_after_s=retry_after_s(self.load())) from None
        self.totals["accepted"] += 1
        return t

    def _check_client_cap(self, client_id: str) -> None:
        """RK_CLIENT_MAX_JOBS: one client may hold only so many jobs waiting or running; the others'
        places in the FIFO are not touched."""
        cap = self.settings.client_max_jobs
        if cap <= 0 or not client_id:
            return
        if sum(1 for t in self.queue if t.client_id == client_id) >= cap:
            raise RkError("too_many_jobs", f"this client ({client_id}) already has {cap} jobs waiting or running, "
                          f"the most one client may (RK_CLIENT_MAX_JOBS); retry when one ends",
                          retry_after_s=retry_after_s(self.load()))

    def load(self) -> LoadView:
        """The predicted wait and drain state (busy.py): what balancers read, built from the queue."""
        kv = 0.0
        for t in self.queue.running:
            ctx = t.job.options.num_ctx or t.manifest.context_length if isinstance(t.job, ChatJob) else 0
            if ctx:
                kv = (t.stats.prefill_tokens + t.stats.cached_tokens + t.generated) / ctx
        return self.job_times.load(len(self.queue.waiting) + len(self.queue.running), kv, self.draining)

    def admit(self, job: Job, m: Manifest) -> None:
        """Refuse what the model cannot do before the job waits for nothing (Ollama's 400s and wording)."""
        for cap, what in required_capabilities(job):
            if m.can(cap):
                continue
            if cap == "embedding":
                raise RkError("not_embedding_model", f"{m.name} does not support embeddings; embed with a model that "
                              f"does, such as {self.settings.default_embed_model}", param="model")
            if cap == "completion":
                raise RkError("not_chat_model", f"{m.name} does not support chat (it is an embedding model); try "
                              f"{self.settings.default_chat_model}", param="model")
            name = f'"{m.name}"' if cap == "thinking" else m.name  # Ollama quotes the name here, not for tools
            raise RkError("unsupported", f"{name} does not support {what}", param=what)
        if isinstance(job, EmbedJob) and not job.texts:
            raise RkError("empty_input", "no texts to embed", param="input")
        if isinstance(job, ChatJob) and job.spec.format is not None:
            schema_for(job.spec.format)  # a schema that is not one is the client's 400
            info = backend_info(m.backend)
            if info is None or info.structured is None:
                raise RkError("unsupported", f"{m.name} does not support structured output ('format') on the "
                              f"{m.backend} backend", param="format")
        if not isinstance(job, ModelAction):
            self.residency.check_usable(m)

    def get(self, ticket_id: str) -> Ticket | None:
        return self.queue.get(ticket_id)

    def watch(self) -> asyncio.Event:
        """An event set whenever the queue's state changes (for `watch`); `unwatch` it when done."""
        return self.queue.watch()

    def unwatch(self, ev: asyncio.Event) -> None:
        self.queue.unwatch(ev)

    def stop_running(self, reason: str) -> None:
        """Stop whatever runs now because the daemon is going away: it ends with `shutting_down`."""
        for t in list(self.queue.running):
            self._stop(t, RkError("shutting_down", reason))

    def cancel(self, ticket_id: str, reason: str = "cancelled") -> bool:
        """Remove a waiting job at once, or abort a running one; False if it is unknown or finished."""
        t = self.queue.get(ticket_id)
        if t is None or t.finished:
            return False
        if self.queue.remove(t):
            self._finish(t, RkError("cancelled", reason))
        elif t in self.queue.running:
            t.cancel_requested = True
            if len(self.queue.running) == 1:
                self.runner.cancel(t.sent)
            else:  # one job of a shared embedding batch: drop its share, let the others finish
                self._finish(t, RkError("cancelled", reason))
        return True

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run jobs in order, forever; between jobs, unload models whose keep-alive ran out."""
        timers = asyncio.create_task(self._queue_timeouts())
        try:
            while True:
                head = self.queue.waiting[0] if self.queue.waiting else None
                if head is None or head.sent is None:  # the next job's command is not already in the runner
                    await self.residency.unload_expired()
                if not self.queue.waiting:
                    await self.queue.wait_for_work(self.residency.next_expiry_in())
                    continue
                batch = self.queue.take(self._pick)
                self._start(batch)
                try:
                    await self._execute(batch)
                except Exception as e:  # a bug here must not stop the queue
                    log.exception("job failed unexpectedly")
                    for t in batch:
                        self._finish(t, RkError("internal", f"internal error: {e}"))
                finally:
                    self.queue.done_running()
        finally:
            timers.cancel()

    def _pick(self, waiting: deque[Ticket]) -> list[Ticket]:
        """The head job, plus, for embeddings, following jobs for the same model up to one slice of texts."""
        head = waiting.popleft()
        batch = [head]
        if not isinstance(head.job, EmbedJob):
            return batch
        room = self.settings.embed_slice
        t = head
        while True:
            rest = t.total - t.cursor
            room -= min(rest, room)
            if (room <= 0 or not waiting or not isinstance(waiting[0].job, EmbedJob)
                    or waiting[0].manifest.name != head.manifest.name):
                return batch
            t = waiting.popleft()
            batch.append(t)

    def _start(self, batch: list[Ticket]) -> None:
        now = time.monotonic()
        for t in batch:
            if t.started is None:
                t.started = now
                t.stats.wait_ms = (now - t.arrived) * 1000
                t.emit(ev.Started())

    async def _execute(self, batch: list[Ticket]) -> None:
        lead = batch[0]
        first = False
        try:
            load_ms = await self._ensure_loaded(lead)
            if lead.cancel_requested:  # cancelled while its model loaded: nothing to abort in the runner
                raise RkError("cancelled", "cancelled")
            first = not isinstance(lead.job, ModelAction) and self.residency.start_job(lead.manifest.name)
            for t in batch:
                t.stats.load_ms += load_ms
            if isinstance(lead.job, ChatJob):
                await self._generate(lead)
            elif isinstance(lead.job, EmbedJob):
                await self._embed(batch)
            else:
                await self._model_action(lead)
        except NotBegun as e:
            self._retry(batch, e)
        except Crashed as e:
            if first and e.fault and lead.stop_reason is None and not any(t.generated for t in batch):
                self._crashed_in_first_prefill(batch, e)
            else:
                for t in batch:
                    self._finish(t, lead.stop_reason or e)
        except RkError as e:
            if e.code in ("cancelled", "runner_crashed") and lead.stop_reason is not None:
                e = lead.stop_reason  # the daemon stopped it (timeout, slow client, shutdown), not a fault
            for t in batch:
                self._finish(t, e)
        self.residency.touch(lead.manifest.name, lead.job.keep_alive_s)

    def _retry(self, batch: list[Ticket], e: NotBegun) -> None:
        """The runner died before these jobs began: they keep their places and run on a fresh runner."""
        for t in reversed(batch):
            t.sent = None
            t.retries += 1
            if t.retries > MAX_RETRIES:
                self._finish(t, e)
            else:
                log.warning("job %s never began in a dead runner; running it again", t.id)
                self.queue.requeue(t, front=True)

    def _context(self, t: Ticket) -> int | None:
        """The context a job needs: a chat's resolved num_ctx; other jobs run on any."""
        return t.job.options.num_ctx if isinstance(t.job, ChatJob) else None

    def _crashed_in_first_prefill(self, batch: list[Ticket], e: Crashed) -> None:
        """A fault in a model's first prefill, before any token, is likely a kernel this CPU cannot run (as
        llama.cpp's AMX repack on Sapphire Rapids): reload the model once with safe settings and run the
        jobs again; crashing with them too fails the jobs with `engine_crashed`."""
        name = batch[0].manifest.name
        if name in self.residency.safe:
            err = RkError("engine_crashed", f"{name} crashed the engine ({e.why}) in its first prefill, also with "
                                            f"safe settings ({SAFE_SETTINGS})")
            for t in batch:
                self._finish(t, err)
            return
        self.residency.safe.add(name)
        log.warning("%s crashed the engine (%s) in its first prefill; reloading it with safe settings (%s) "
                    "and running the job again", name, e.why, SAFE_SETTINGS)
        for t in reversed(batch):
            t.sent = None
            self.queue.requeue(t, front=True)

    async def _ensure_loaded(self, t: Ticket) -> float:
        if isinstance(t.job, ModelAction) and t.job.action == "unload":
            return 0.0
        need = self._context(t)
        if not self.residency.is_loaded(t.manifest, need):
            t.state = "loading"
            t.emit(ev.Loading(t.manifest.name))
            self.queue.changed()
        return await self.residency.ensure(t.manifest, need)

    async def _generate(self, t: Ticket) -> None:
        assert isinstance(t.job, ChatJob)
        t.state = "prefill"
        self.queue.changed()
        call = t.sent if t.sent is not None and t.sent.live else await self.runner.generate(t.manifest.name, t.job.spec)
        t.sent = call
        self._send_ahead(t)
        timer = self._job_timer(t)
        try:
            async for e in self.runner.events(call):
                if t.finished:
                    continue
                self._on_generation_event(t, e)
        finally:
            if timer is not None:
                timer.cancel()
        self._finish(t, None)

    def _stop(self, t: Ticket, why: RkError) -> None:
        """The daemon ends a running job itself; it finishes with `why` instead of `cancelled`."""
        t.stop_reason = why
        self.runner.cancel(t.sent)

    def _watch_backlog(self, t: Ticket) -> None:
        """A client that leaves too many events unread for too long has its job stopped (`slow_client`),
        so its memory stays bounded and the queue moves on; a client that catches up is forgiven.
        However fast the backend, a job never holds more than BACKLOG_CAP times the backlog."""
        if t.unread <= self.settings.client_backlog:
            t.backlog_since = None
            return
        now = time.monotonic()
        if t.backlog_since is None:
            t.backlog_since = now
        elif t.stop_reason is None and (now - t.backlog_since > self.settings.slow_client_grace_s
                                        or t.unread > BACKLOG_CAP * self.settings.client_backlog):
            log.warning("job %s: its client left %d events unread for %.0f s; stopping it", t.id, t.unread,
                        self.settings.slow_client_grace_s)
            self._stop(t, RkError("slow_client", f"the client read nothing for {self.settings.slow_client_grace_s:.0f} s "
                                                 f"while {t.unread} events waited; the job was stopped"))

    def _on_generation_event(self, t: Ticket, e: wire.Progress | wire.Finished) -> None:
        self._watch_backlog(t)
        s = t.stats
        match e:
            case wire.Progress(event=step):
                match step:
                    case ev.Prefilling(done=done, total=total):
                        t.prefilled = (done, total)
                    case ev.Prefill(ms=ms, tokens=n, cached=cached):
                        s.prefill_ms, s.prefill_tokens, s.cached_tokens = ms, n, cached
                        t.state = "generating"
                    case ev.Token():
                        t.generated += 1
                        t.state = "answering"
                    case ev.Thinking():
                        t.generated += 1
                        s.thinking_tokens += 1
                        t.state = "thinking"
                    case ev.ToolCalled():
                        t.state = "calling tool"
                t.emit(step)
            case wire.Finished(result=r):
                s.record(r)
                s.memory_mb = s.memory_mb or self.runner.rss_mb()
        self.queue.changed()

    def _send_ahead(self, current: Ticket) -> None:
        """Queue the next chats' commands in the runner now, so each starts the moment the one before ends.

        Only chats on the same, resident model that stays loaded after each job, and at most
        SEND_AHEAD of them: the runner then never waits on the daemon between jobs, even short ones.
        The jobs keep their places and positions in the queue; cancelling one makes the runner skip it.
        """
        prev = current
        for nxt in itertools.islice(self.queue.waiting, SEND_AHEAD):
            if (not isinstance(nxt.job, ChatJob) or nxt.manifest.name != current.manifest.name
                    or not self.residency.stays_loaded(prev.manifest.name, prev.job.keep_alive_s)
                    or not self.residency.is_loaded(nxt.manifest, self._context(nxt))):
                return
            if nxt.sent is None or not nxt.sent.live:
                nxt.sent = self.runner.generate_ahead(nxt.manifest.name, nxt.job.spec)
                if nxt.sent is None:
                    return
            prev = nxt

    async def _embed(self, batch: list[Ticket]) -> None:
        texts: list[str] = []
        spans: list[tuple[Ticket, int, int]] = []
        room = self.settings.embed_slice
        for t in batch:
            assert isinstance(t.job, EmbedJob)
            end = min(t.total, t.cursor + room)
            spans.append((t, t.cursor, end))
            texts.extend(t.job.texts[t.cursor:end])
            room -= end - t.cursor
            t.state = "embedding"
        self.queue.changed()
        lead = batch[0]
        t0 = time.perf_counter()
        call = await self.runner.embed(lead.manifest.name, tuple(texts), all(t.job.truncate for t in batch))
        for t in batch:
            t.sent = call
        timer = self._job_timer(lead) if len(batch) == 1 else None
        try:
            result = await self.runner.vectors(call)
        finally:
            if timer is not None:
                timer.cancel()
            for t in batch:
                t.sent = None  # a re-queued slice gets a new command next time
        ms = (time.perf_counter() - t0) * 1000
        vectors = result.matrix()
        offset = 0
        for t, start, end in spans:
            n = end - start
            share = vectors[offset:offset + n]
            ntok = int(sum(result.tokens[offset:offset + n]))
            offset += n
            if t.cancel_requested:  # a slice cannot be interrupted; its vectors go to no one
                self._finish(t, RkError("cancelled", "cancelled"))
            if t.finished:
                continue
            t.emit(ev.Vectors(start, share, ntok))
            s = t.stats
            s.batch_jobs = max(len(batch), s.batch_jobs)
            t.cursor = end
            s.prompt_tokens += ntok
            s.prefill_tokens += ntok
            s.prefill_ms += ms * n / max(1, len(texts))
            if t.cursor >= t.total:
                s.memory_mb = self.runner.rss_mb()
                self._finish(t, None)
            else:
                self.queue.requeue(t)  # the rest waits its turn again: chats typed meanwhile go first

    async def _model_action(self, t: Ticket) -> None:
        assert isinstance(t.job, ModelAction)
        if t.job.action == "unload":
            await self.residency.unload(t.manifest.name)
        self._finish(t, None)

    def _job_timer(self, t: Ticket) -> asyncio.TimerHandle | None:
        limit = self.settings.job_timeout_s
        if limit <= 0:
            return None

        def fire() -> None:
            self._stop(t, RkError("timeout", f"the job ran longer than {limit:.0f} s"))

        return asyncio.get_running_loop().call_later(limit, fire)

    async def _queue_timeouts(self) -> None:
        """Fail jobs that waited longer than the queue timeout."""
        limit = self.settings.queue_timeout_s
        if limit <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            for t in self.queue.expired(limit):
                self._finish(t, RkError("timeout", f"waited more than {limit:.0f} s in the queue"))

    # ---- bookkeeping -------------------------------------------------------------------------

    def _finish(self, t: Ticket, error: RkError | None) -> None:
        if t.finished:
            return
        if t.sent is not None and t not in self.queue.running:
            self.runner.discard(t.sent)  # sent ahead, never begun: the runner skips it
        s = t.stats
        s.total_ms = (time.monotonic() - t.arrived) * 1000
        if error is None and t.started is not None:
            self.job_times.add(time.monotonic() - t.started)
        if error is None:
            self.totals["done"] += 1
            self.totals["tokens"] += s.generate_tokens
            self.totals["prompt_tokens"] += s.prompt_tokens
            t.emit(ev.Done(s))
        else:
            outcome = "cancelled" if error.code == "cancelled" else "errors"
            self.totals[outcome] += 1
            self.totals[f"error:{error.code}"] += 1
            t.emit(ev.Failed(error))
        self.recent.appendleft(recent_job(t, "done" if error is None else error.code))
        self.queue.forget(t)
        for observe in self.observers:
            observe(t, error)
        self.queue.changed()

    # ---- shutdown and status -----------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Refuse new jobs, fail the waiting ones with `shutting_down`, let the running one finish within
        `grace_s`, then abort it; the runner is stopped last."""
        self.closing = True
        for t in list(self.queue.waiting):
            self.queue.remove(t)
            self._finish(t, RkError("shutting_down", "the daemon is shutting down; retry when it is back"))
        await self._until_idle(grace_s)
        self.stop_running("the daemon is shutting down")
        await self._until_idle(2.0)
        for t in list(self.queue.running):
            self._finish(t, RkError("shutting_down", "the daemon is shutting down"))
        await self.runner.stop()

    async def _until_idle(self, timeout_s: float) -> None:
        """Until no job runs or `timeout_s` has passed; the queue's change notice wakes it."""
        changed = self.queue.watch()
        try:
            deadline = time.monotonic() + timeout_s
            while self.queue.running and (left := deadline - time.monotonic()) > 0:
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            self.queue.unwatch(changed)

    def status(self) -> Snapshot:
        """The queue, the running jobs, loaded models and totals: what every view of the daemon shows
        (the service adds the daemon-wide facts)."""
        now, now_wall = time.monotonic(), time.time()
        self.residency.sync()
        return Snapshot(
            queue=tuple(job_view(t, now) for t in self.queue),
            depth=len(self.queue.waiting),
            running=tuple(t.id for t in self.queue.running),
            loaded=tuple(loaded_view(r) for r in self.residency.loaded.values()),
            failed_models=dict(self.residency.failed),
            totals=dict(self.totals) | {"runner_restarts": self.runner.restarts},
            recent=tuple(self.recent),
            uptime_s=round(now_wall - self.started_at, 1),
            runner=RunnerView(self.runner.pid, round(self.runner.rss_mb(), 1), self.runner.restarts,
                              self.runner.state, self.runner.down_reason),
            load=self.load(),
            closing=self.closing,
        )
