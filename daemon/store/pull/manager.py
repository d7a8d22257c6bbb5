"""Runs hub pulls beside the job queue: one download per model however many clients ask, with progress.

Each client follows a pull as a stream of Ollama's statuses (`PullEvent`); one that joins late first
gets what it missed. When the last client goes away the download stops and its partial file stays,
so the next pull resumes it. `describe()` is what `status`, `rk ps` and `rk top` show.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from rk.daemon.errors import RkError
from rk.daemon.store.models import Manifest, ModelStore, normalize_name
from rk.daemon.store.pull import hub
from rk.daemon.store.pull.blobs import Blobs, check_space
from rk.daemon.store.pull.download import download
from rk.daemon.store.pull.events import SUCCESS, PullEvent, PullView
from rk.daemon.store.pull.manifests import gguf_manifest, rkllm_manifest
from rk.daemon.store.pull.refs import HubRef, Wanted, parse_ref, plan

log = logging.getLogger("rk.daemon.store.pull")
PROGRESS_EVERY_S = 0.1  # progress lines per file, at most ten a second (the status shows live figures)
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


_END = object()


class _Pull:
    def __init__(self, ref: HubRef) -> None:
        self.ref = ref
        self.history: list[PullEvent] = []
        self.queues: set[asyncio.Queue[Any]] = set()
        self.task: asyncio.Task[None] | None = None
        self.error: RkError | None = None
        self.abandoned = False  # its last client left: it is stopping, a new client starts afresh
        self.completed = self.total = 0
        self.started_at = time.time()
        self._last_progress = 0.0

    def emit(self, ev: PullEvent) -> None:
        last = self.history[-1] if self.history else None
        if last is not None and ev.digest is not None and last.digest == ev.digest:
            self.history[-1] = ev  # a late joiner needs only a file's latest progress
        else:
            self.history.append(ev)
        for q in self.queues:
            q.put_nowait(ev)

    def progress(self, event: PullEvent, base: int) -> None:
        """A file's byte count moved: the live figure always, a status line at most every PROGRESS_EVERY_S."""
        assert event.completed is not None and event.total is not None
        self.completed = base + event.completed
        now = time.monotonic()
        if event.completed in (0, event.total) or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.emit(event)

    def end(self) -> None:
        for q in self.queues:
            q.put_nowait(_END)


class PullManager:
    def __init__(self, store: ModelStore, soc: str) -> None:
        """`soc`: this board's chip ('RK3588'), which picks the `.rkllm` file of a repo built for several."""
        self.store = store
        self.blobs = Blobs(store)
        self.soc = soc
        self._pulls: dict[str, _Pull] = {}
        self._blob_locks: dict[str, asyncio.Lock] = {}  # one per blob ever fetched: two pulls never share a partial

    def describe(self) -> tuple[PullView, ...]:
        return tuple(PullView(p.ref.name, p.history[-1].status if p.history else "starting", p.completed, p.total,
                              len(p.queues), p.started_at) for p in self._pulls.values())

    async def follow(self, raw_name: str) -> AsyncIterator[PullEvent]:
        """The statuses of the pull of `raw_name` (started now, or joined); raises RkError if it fails.

        Use it with `contextlib.aclosing`: closing it early is this client leaving the pull."""
        ref = parse_ref(raw_name)
        if ref is None:
            normalize_name(raw_name)  # an invalid name is a bad request, not a missing model
        if ref is None and self._present(raw_name):  # a local model: nothing to fetch, as Ollama offline answers
            yield PullEvent("pulling manifest")
            yield SUCCESS
            return
        if ref is None:
            raise RkError("model_not_found", f"pull model manifest: file does not exist: rk pulls from the Hugging "
                          f"Face hub; name a model hf.co/OWNER/REPO[:TAG] (not {raw_name!r})", param="model")
        ref = self._as_pulled(ref)
        pull = self._pulls.get(ref.key)
        if pull is None or pull.abandoned:
            pull = self._pulls[ref.key] = _Pull(ref)
            pull.task = asyncio.create_task(self._run(pull))
        q: asyncio.Queue[Any] = asyncio.Queue()
        for ev in pull.history:
            q.put_nowait(ev)
        pull.queues.add(q)
        try:
            while (item := await q.get()) is not _END:
                yield item
            if pull.error is not None:
                raise pull.error
        finally:
            pull.queues.discard(q)
            if not pull.queues and pull.task is not None and not pull.task.done():
                pull.abandoned = True
                pull.task.cancel()  # nobody is waiting: stop, keeping the partial file for next time

    async def _run(self, pull: _Pull) -> None:
        try:
            await self._pull(pull)
        except asyncio.CancelledError:
            log.info("pull of %s stopped: no client left", pull.ref.name)
            pull.error = RkError("cancelled", "the pull stopped; pull again to resume it")
        except RkError as e:
            pull.error = e
        except Exception as e:
            log.exception("pull of %s failed", pull.ref.name)
            pull.error = RkError("internal", f"pull failed: {e}")
        finally:
            if self._pulls.get(pull.ref.key) is pull:
                del self._pulls[pull.ref.key]
            pull.end()

    async def _pull(self, pull: _Pull) -> None:
        ref, cfg = pull.ref, hub.HubConfig.from_env()
        pull.emit(PullEvent("pulling manifest"))
        try:
            listing = await hub.list_files(cfg, ref)
        except RkError as e:
            if e.code == "hub_unavailable" and self._present(ref.name):
                log.warning("%s; %s is already here", e.message, ref.name)
                pull.emit(SUCCESS)
                return
            raise
        wanted = plan(list(listing.files), ref, self.soc)
        pull.total = sum(w.file.size for w in wanted)
        missing = [w for w in wanted if not self.blobs.has(w.file.digest)]
        check_space(self.store.root, sum(w.file.size - _size(self.blobs.partial(w.file.digest)) for w in missing))
        base = 0
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            for w in wanted:
                await self._fetch(pull, session, cfg, listing.commit, w, base)
                base += w.file.size
        pull.emit(PullEvent("verifying sha256 digest"))  # each file was checked as it completed, before use
        pull.emit(PullEvent("writing manifest"))
        directory, source = self.store.model_dir(ref.name), f"hf.co/{ref.repo}@{listing.commit}"
        before = self.blobs.inodes(directory)
        if not self._current(ref.name, source, directory, wanted):  # else the same commit is already registered
            for w in wanted:
                self.blobs.link(w.file.digest, directory / w.dest)
            manifest = await asyncio.to_thread(_manifest, ref.name, directory, wanted)
            manifest.source = source
            self.store.save(manifest)
        pull.emit(PullEvent("removing any unused layers"))
        keep = {w.dest for w in wanted} | {"manifest.json"}
        for p in sorted(directory.rglob("*"), reverse=True):  # files of a previous version of this name
            rel = p.relative_to(directory).as_posix()
            if p.is_file() and rel not in keep:
                p.unlink()
        self.blobs.prune(before)
        pull.emit(SUCCESS)

    async def _fetch(self, pull: _Pull, session: aiohttp.ClientSession, cfg: hub.HubConfig, commit: str,
                     w: Wanted, base: int) -> None:
        """One file into the blobs directory, verified; a blob another pull is fetching is waited for, not re-fetched."""
        d = w.file.digest
        status = f"pulling {d.hex[:12]}"
        lock = self._blob_locks.setdefault(d.filename, asyncio.Lock())
        async with lock:
            if self.blobs.has(d):
                pull.progress(PullEvent(status, d.wire, w.file.size, w.file.size), base)
                return
            partial = self.blobs.partial(d)
            got = await download(session, cfg.file_url(pull.ref.repo, commit, w.file.path), cfg.headers(), partial,
                                 w.file, lambda n: pull.progress(PullEvent(status, d.wire, w.file.size, n), base))
            if got != d.hex:
                partial.unlink(missing_ok=True)
                raise RkError("digest_mismatch", f"{w.file.path} from hf.co/{pull.ref.repo} does not match the hub's "
                              f"{d.algo} digest {d.hex} (got {got}); refused")
            self.blobs.adopt(partial, d)

    def _as_pulled(self, ref: HubRef) -> HubRef:
        """Names match whatever their case: a model pulled before keeps the hub's spelling of its repo."""
        with contextlib.suppress(RkError):
            repo = self.store.get(ref.name).source.removeprefix("hf.co/").split("@", 1)[0]
            if repo.lower() == ref.repo.lower():
                return replace(ref, repo=repo)
        return ref

    def _current(self, name: str, source: str, directory: Path, wanted: tuple[Wanted, ...]) -> bool:
        """The model is registered from this very commit with every file in place (re-reading a GGUF's
        metadata takes seconds on a board)."""
        with contextlib.suppress(RkError):
            return self.store.get(name).source == source and all((directory / w.dest).is_file() for w in wanted)
        return False

    def _present(self, name: str) -> bool:
        with contextlib.suppress(RkError):
            self.store.get(name)
            return True
        return False


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def _manifest(name: str, directory: Path, wanted: tuple[Wanted, ...]) -> Manifest:
    roles = {w.role: w.dest for w in wanted}
    if roles["model"].lower().endswith(".gguf"):
        return gguf_manifest(name, directory, roles["model"], roles.get("mmproj"))
    has_tokenizer = any(w.dest in ("tokenizer/tokenizer.json", "tokenizer/tokenizer.model") for w in wanted)
    return rkllm_manifest(name, directory, roles["model"], "tokenizer" if has_tokenizer else None)

