"""The runner process: owns the backends and the accelerator, and talks to the daemon over pipes.

Commands arrive as `wire` frames on stdin; events leave as `wire` frames on a private copy of fd 1
(fd 1 itself is pointed at stderr, so native libraries that print cannot corrupt the channel).
A reader thread handles `Cancel` at once, while the main thread runs one command at a time.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from rk.daemon.backends import load_model, preload
from rk.daemon.backends.base import LoadedModel, RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenResult, GenSpec
from rk.daemon.runner import wire
from rk.daemon.runner.output import Pipeline, output_parser

log = logging.getLogger("rk.runner")


class Child:
    def __init__(self, config: RunnerConfig, out: BinaryIO) -> None:
        self.config = config
        self._out = out
        self._lock = threading.Lock()
        self.models: dict[str, LoadedModel] = {}
        self._current: tuple[int, LoadedModel | None] | None = None
        self._dropped: set[int] = set()  # cancelled before they began
        self._cancel_lock = threading.Lock()
        self._stop = threading.Event()
        self._cancelled = False
        self._commands: queue.Queue[wire.Command | None] = queue.Queue()
        # Templating and tokenising of queued chats runs here while the current job generates.
        self._prepare = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rk-prepare")
        self._prepared: dict[int, Future[Any]] = {}

    def send(self, ev: wire.Event) -> None:
        frame = wire.encode(ev)
        with self._lock:
            self._out.write(frame)
            self._out.flush()

    def read_commands(self, stream: BinaryIO) -> None:
        """Reader thread: a cancel acts immediately; everything else waits its turn on the main thread."""
        while (frame := wire.read_frame_sync(stream)) is not None:
            try:
                cmd = wire.decode(frame)
            except ValueError as e:
                log.error("%s", e)
                continue
            if isinstance(cmd, wire.Cancel):
                self._cancel(cmd.seq)
            else:
                if isinstance(cmd, wire.Generate):
                    self._prepare_ahead(cmd)
                self._commands.put(cmd)
        self._commands.put(None)

    def _cancel(self, seq: int) -> None:
        with self._cancel_lock:
            cur = self._current
            if cur is None or cur[0] != seq:
                self._dropped.add(seq)  # still queued: skip it when its turn comes
                return
            self._cancelled = True
            self._stop.set()
        if cur[1] is not None:
            cur[1].abort()

    def _prepare_ahead(self, cmd: wire.Generate) -> None:
        """Start a queued chat's `prepare` now, so its turn begins with the prompt already tokenised."""
        model = self.models.get(cmd.model)
        if model is not None:
            self._prepared[cmd.seq] = self._prepare.submit(model.prepare, cmd.spec)

    def serve(self) -> None:
        self.send(wire.Ready(os.getpid()))
        while (cmd := self._commands.get()) is not None:
            self.send(wire.Begun(cmd.seq))
            try:
                self.send(self._run(cmd))
            except RkError as e:
                self.send(wire.Error(cmd.seq, e.code, e.message))
            except Exception as e:  # noqa: BLE001 - a backend bug may raise anything: it fails the job, not the runner
                traceback.print_exc()
                self.send(wire.Error(cmd.seq, "internal", f"{type(e).__name__}: {e}"))
            finally:
                self._current = None
                self._prepared.pop(cmd.seq, None)
        for m in self.models.values():
            m.close()

    def _model(self, name: str) -> LoadedModel:
        m = self.models.get(name)
        if m is None:
            raise RkError("internal", f"model {name} is not loaded in the runner")
        return m

    def _begin(self, seq: int, model: LoadedModel | None) -> None:
        """Make `seq` the command in flight, unless it was cancelled while it waited its turn."""
        with self._cancel_lock:
            self._stop.clear()
            self._cancelled = False
            self._current = (seq, model)
            if seq in self._dropped:
                self._dropped.discard(seq)
                raise RkError("cancelled", "cancelled")

    def _run(self, cmd: wire.Command) -> wire.Event:
        match cmd:
            case wire.Load(seq=seq, manifest=manifest, num_ctx=num_ctx, safe=safe):
                self._begin(seq, None)
                t0 = time.perf_counter()
                if manifest.name not in self.models:
                    self.models[manifest.name] = load_model(manifest, self.config.safe() if safe else self.config, num_ctx)
                loaded = self.models[manifest.name]
                return wire.Loaded(seq, (time.perf_counter() - t0) * 1000, loaded.memory_mb(), loaded.details())
            case wire.Unload(seq=seq, model=name):
                self._begin(seq, None)
                m = self.models.pop(name, None)
                if m is not None:
                    m.close()
                return wire.Unloaded(seq)
            case wire.Generate():
                return self._generate(cmd)
            case wire.Embed(seq=seq, model=name, texts=texts, truncate=truncate):
                model = self._model(name)
                self._begin(seq, model)
                res = model.embed(list(texts), truncate)
                return wire.Vectors.of(seq, res.vectors, res.tokens)
        raise RkError("internal", f"runner: unexpected command {type(cmd).__name__}")

    def _generate(self, cmd: wire.Generate) -> wire.Event:
        model = self._model(cmd.model)
        self._begin(cmd.seq, model)
        spec = cmd.spec
        ahead = self._prepared.pop(cmd.seq, None)
        prepared = ahead.result() if ahead is not None else None
        if spec.count_only:
            return wire.Finished(cmd.seq, GenResult(counted_tokens=self._count(model, spec, prepared)))
        parser = output_parser(model.manifest, model.chat_template, spec)
        pipe = Pipeline(cmd.seq, self.send, spec, self._stop, parser)
        result = model.generate(spec, pipe, self._stop, prepared)
        if self._cancelled:
            raise RkError("cancelled", "cancelled")
        pipe.finish()
        if pipe.hit_stop:
            result.finish_reason, result.stop_sequence = "stop", pipe.stop_sequence
        elif pipe.ended_in_thinking and result.finish_reason == "stop":
            raise RkError("model_failed", f"{model.manifest.name} ended its reply inside its reasoning and gave no "
                          "answer (a known RKLLM 1.3.0 behaviour); retry with thinking off (think: false)")
        if (problem := pipe.tool_choice.problem()) is not None:
            raise RkError("model_failed", f"{model.manifest.name} did not follow tool_choice: {problem}")
        if (problem := pipe.format_problem(spec.format)) is not None:
            cut = " (the reply reached max tokens first)" if result.finish_reason == "length" else ""
            raise RkError("model_failed", f"{model.manifest.name} did not produce the requested format{cut}: {problem}")
        return wire.Finished(cmd.seq, result)

    @staticmethod
    def _count(model: LoadedModel, spec: GenSpec, prepared: Any) -> int:
        """The prompt's tokens as the model would see them: its template and tokenizer, through `prepare`."""
        ids = prepared if prepared is not None else model.prepare(spec)
        if not isinstance(ids, list):
            raise RkError("not_implemented", f"{model.manifest.name} cannot count tokens: its {model.manifest.backend} "
                          "backend templates and tokenises inside its runtime, out of rk's reach")
        return len(ids)


OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # weights come from packages and the model store, never a hub
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def main() -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="rk-runner %(levelname)s %(message)s")
    config = wire.decode_config(sys.argv[1]) if len(sys.argv) > 1 else RunnerConfig()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    child = Child(config, out)
    threading.Thread(target=preload, args=(config.preload,), daemon=True, name="rk-preload").start()
    threading.Thread(target=child.read_commands, args=(sys.stdin.buffer,), daemon=True).start()
    child.serve()


if __name__ == "__main__":
    main()
