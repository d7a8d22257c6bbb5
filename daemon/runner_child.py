"""The runner process: owns the backends and the accelerator, and talks to the daemon over pipes.

Commands arrive as JSON lines on stdin; events leave as JSON lines on a private copy of fd 1
(fd 1 itself is pointed at stderr, so native libraries that print cannot corrupt the channel).
A reader thread handles `cancel` at once, while the main thread runs one command at a time.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import queue
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from rk.daemon.backends import load_model, preload
from rk.daemon.backends.base import GenRequest, LoadedModel, RunnerConfig
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions
from rk.daemon.models import Manifest
from rk.daemon.textstream import StopFilter

log = logging.getLogger("rk.runner")


class _Forward:
    """The Sink a backend writes to: each call becomes one event line."""

    def __init__(self, child: "Child", seq: int) -> None:
        self._child, self._seq = child, seq

    def prefill(self, ms: float, tokens: int) -> None:
        self._child.send({"ev": "prefill", "seq": self._seq, "ms": ms, "tokens": tokens})

    def token(self, text: str) -> None:
        self._child.send({"ev": "token", "seq": self._seq, "text": text})


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
        self._commands: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        # Templating and tokenising of queued chats runs here while the current job generates.
        self._prepare = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rk-prepare")
        self._prepared: dict[int, Future[Any]] = {}

    def send(self, obj: dict[str, Any]) -> None:
        line = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def read_commands(self, stream: BinaryIO) -> None:
        """Reader thread: cancel acts immediately; everything else waits its turn on the main thread."""
        for line in stream:
            cmd = orjson.loads(line)
            if cmd.get("op") == "cancel":
                with self._cancel_lock:
                    cur = self._current
                    if cur is None or cur[0] != cmd.get("seq"):
                        self._dropped.add(int(cmd.get("seq", 0)))  # still queued: skip it when its turn comes
                        continue
                    self._cancelled = True
                    self._stop.set()
                if cur[1] is not None:
                    cur[1].abort()
            else:
                self._prepare_ahead(cmd)
                self._commands.put(cmd)
        self._commands.put(None)

    def _prepare_ahead(self, cmd: dict[str, Any]) -> None:
        """Start a queued chat's `prepare` now, so its turn begins with the prompt already tokenised."""
        model = self.models.get(cmd.get("model", "")) if cmd.get("op") == "generate" else None
        prepare = getattr(model, "prepare", None)
        if prepare is not None:
            self._prepared[int(cmd["seq"])] = self._prepare.submit(prepare, gen_request(cmd))

    def serve(self) -> None:
        self.send({"ev": "ready", "pid": os.getpid()})
        while (cmd := self._commands.get()) is not None:
            seq = int(cmd.get("seq", 0))
            try:
                self.send(self._run(cmd, seq) | {"seq": seq})
            except RkError as e:
                self.send({"ev": "error", "seq": seq, "code": e.code, "message": e.message})
            except Exception as e:  # a backend bug fails the job, not the runner
                traceback.print_exc()
                self.send({"ev": "error", "seq": seq, "code": "internal", "message": f"{type(e).__name__}: {e}"})
            finally:
                self._current = None
                self._prepared.pop(seq, None)
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

    def _run(self, cmd: dict[str, Any], seq: int) -> dict[str, Any]:
        op = cmd["op"]
        self._begin(seq, self.models.get(cmd["model"]) if op in ("generate", "embed") else None)
        if op == "load":
            manifest = Manifest.from_dict(cmd["manifest"], Path(cmd["dir"]))
            t0 = time.perf_counter()
            if manifest.name not in self.models:
                self.models[manifest.name] = load_model(manifest, self.config)
            loaded = self.models[manifest.name]
            details = getattr(loaded, "details", None)
            return {"ev": "loaded", "ms": (time.perf_counter() - t0) * 1000, "memory_mb": loaded.memory_mb(),
                    "details": details() if details is not None else {}}
        if op == "unload":
            m = self.models.pop(cmd["model"], None)
            if m is not None:
                m.close()
            return {"ev": "unloaded"}
        model = self._model(cmd["model"])
        if op == "generate":
            return self._generate(model, cmd, seq)
        if op == "embed":
            res = model.embed(list(cmd["texts"]), bool(cmd.get("truncate", True)))
            return {"ev": "vectors", "shape": list(res.vectors.shape), "tokens": res.tokens,
                    "data": base64.b64encode(res.vectors.astype("<f4").tobytes()).decode()}
        raise RkError("bad_request", f"runner: unknown op {op!r}")

    def _generate(self, model: LoadedModel, cmd: dict[str, Any], seq: int) -> dict[str, Any]:
        req = dataclasses.replace(gen_request(cmd), prepared=self._prepared.pop(seq, None))
        opts = req.options
        filt = StopFilter(_Forward(self, seq), opts.stop, self._stop)
        result = model.generate(req, filt, self._stop)
        if self._cancelled:
            raise RkError("cancelled", "cancelled")
        filt.flush()
        if filt.hit:
            result.finish_reason = "stop"
        return {"ev": "done", "result": result.to_dict()}


def gen_request(cmd: dict[str, Any]) -> GenRequest:
    """The backend's view of a `generate` command."""
    r = cmd["req"]
    return GenRequest(messages=r.get("messages") or [], prompt=r.get("prompt"), raw=bool(r.get("raw")),
                      options=GenOptions.from_dict(r.get("options") or {}))


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
    config = RunnerConfig(**orjson.loads(sys.argv[1])) if len(sys.argv) > 1 else RunnerConfig()
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    child = Child(config, out)
    threading.Thread(target=preload, args=(tuple(config.preload),), daemon=True, name="rk-preload").start()
    threading.Thread(target=child.read_commands, args=(sys.stdin.buffer,), daemon=True).start()
    child.serve()


if __name__ == "__main__":
    main()
