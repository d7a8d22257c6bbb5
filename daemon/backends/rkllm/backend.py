"""The `rkllm` LoadedModel: chat and embeddings on the NPU through one RKLLM handle.

`rkllm_run` runs synchronously on the runner's main thread; the runner's reader thread calls `abort`,
which calls `rkllm_abort`. Every run uses keep_history=0 and is followed by rkllm_clear_kv_cache, so no
job sees another's context. A stop string (the runner sets `stop`) or the job's token limit pauses the
run from inside the callback (return 1), which works on 1.2 as well, where max_new_tokens is init-only.
"""
from __future__ import annotations

import codecs
import ctypes
import threading
import time
from ctypes import Structure, pointer
from typing import Any

import numpy as np

from rk.daemon.backends.base import EmbedResult, GenResult, RunnerConfig, Sink, check_files, l2_normalise
from rk.daemon.backends.rkllm._handle import Handle
from rk.daemon.backends.rkllm._inputs import InputBuilder
from rk.daemon.backends.rkllm._lib import (ABIS, CALLBACK_CONTINUE, CALLBACK_PAUSE, RKLLM_INFER_GENERATE,
                                           RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH,
                                           RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING, RKLLMPerfStat, RKLLMResult,
                                           RKLLMSamplingParam, Abi, bind)
from rk.daemon.backends.rkllm._version import open_library, select_abi
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenSpec
from rk.daemon.models import Manifest
from rk.daemon.procinfo import rss_mb

_RUNTIME_ERROR = "the RKLLM runtime reported an error during the run (its log on stderr says why)"


class _Generation:
    """Listener of one generate run: decodes text incrementally, counts tokens, keeps FINISH's perf."""

    def __init__(self, sink: Sink, stop: threading.Event, limit: int, prompt_tokens: int | None) -> None:
        self.sink, self.stop, self.limit, self.prompt_tokens = sink, stop, limit, prompt_tokens
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.tokens = 0
        self.perf: RKLLMPerfStat | None = None
        self.failed = False

    def __call__(self, result: RKLLMResult, state: int) -> int:
        if state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING):
            self._first_token()
            self.tokens += 1
            if state == RKLLM_RUN_NORMAL and result.text:  # WAITING's text is ignored: the character comes later
                text = self.decoder.decode(ctypes.string_at(result.text))
                if text:
                    self.sink.token(text)
        elif state == RKLLM_RUN_FINISH:
            self.perf = RKLLMPerfStat.from_buffer_copy(result.perf)
        elif state == RKLLM_RUN_ERROR:
            self.failed = True
        if self.stop.is_set() or self.tokens >= self.limit:
            return CALLBACK_PAUSE
        return CALLBACK_CONTINUE

    def _first_token(self) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self.sink.prefill((self.t_first - self.t0) * 1000, self.prompt_tokens or 0)

    def result(self) -> GenResult:
        tail = self.decoder.decode(b"", final=True)
        if tail:
            self.sink.token(tail)
        self._first_token()  # a run that produced no token still reports its prefill once
        finish = "length" if self.tokens >= self.limit else "stop"
        if self.perf is not None:
            p = self.perf
            return GenResult(prefill_ms=p.prefill_time_ms, prefill_tokens=p.prefill_tokens,
                             generate_ms=p.generate_time_ms, generate_tokens=p.generate_tokens,
                             memory_mb=p.memory_usage_mb or rss_mb(), finish_reason=finish)
        assert self.t_first is not None
        return GenResult(prefill_ms=(self.t_first - self.t0) * 1000, prefill_tokens=self.prompt_tokens or 0,
                         generate_ms=(time.perf_counter() - self.t_first) * 1000, generate_tokens=self.tokens,
                         memory_mb=rss_mb(), finish_reason=finish)


class _Hidden:
    """Listener of one GET_LAST_HIDDEN_LAYER run: pools the hidden states while the buffer is still valid."""

    def __init__(self, pooling: str) -> None:
        self.pooling = pooling
        self.vector: np.ndarray | None = None
        self.tokens = 0
        self.failed = False

    def __call__(self, result: RKLLMResult, state: int) -> int:
        layer = result.last_hidden_layer
        if state == RKLLM_RUN_NORMAL and layer.hidden_states and layer.num_tokens > 0:
            states = np.ctypeslib.as_array(layer.hidden_states, shape=(layer.num_tokens, layer.embd_size))
            self.vector = (states[-1] if self.pooling == "last" else states.mean(axis=0)).astype(np.float32)  # copies
            self.tokens = layer.num_tokens
        elif state == RKLLM_RUN_ERROR:
            self.failed = True
        return CALLBACK_CONTINUE


def _sampling(opts: GenOptions, into: Structure) -> Structure:
    """Sampling fields (of RKLLMParam or RKLLMSamplingParam) from job options; temperature 0 means greedy."""
    if opts.temperature is not None:
        into.temperature = max(opts.temperature, 0.0)
        if opts.temperature <= 0:
            into.top_k = 1
    if opts.top_p is not None:
        into.top_p = opts.top_p
    if opts.top_k is not None and (opts.temperature is None or opts.temperature > 0):
        into.top_k = opts.top_k
    if opts.repeat_penalty is not None:
        into.repeat_penalty = opts.repeat_penalty
    return into


class RkllmModel:
    def __init__(self, manifest: Manifest, handle: Handle, inputs: InputBuilder, param: Structure) -> None:
        self.manifest, self._handle, self._inputs, self._param = manifest, handle, inputs, param
        self.context = int(param.max_context_len)
        self.max_new = int(param.max_new_tokens) if param.max_new_tokens > 0 else self.context
        self.pooling = str(manifest.params.get("pooling", "last"))
        self._memory = 0.0

    @property
    def abi(self) -> Abi:
        return self._handle.abi

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        opts = spec.options
        run_input = self._inputs.chat(spec, self.context)
        limit = self.max_new if opts.max_tokens is None else max(1, min(opts.max_tokens, self.max_new))
        infer = self.abi.RKLLMInferParam(mode=RKLLM_INFER_GENERATE, keep_history=0)
        if self.abi.sampling_per_run:
            infer.sampling_params = pointer(_sampling(opts, self._sampling_defaults()))
            infer.max_new_tokens = limit
        listener = _Generation(sink, stop, limit, run_input.tokens)
        try:
            self._handle.run(run_input.struct, infer, listener)
        finally:
            self._handle.clear_kv_cache()
        if listener.failed:
            raise RkError("model_failed", _RUNTIME_ERROR)
        result = listener.result()
        self._memory = result.memory_mb
        return result

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        rows: list[np.ndarray] = []
        counts: list[int] = []
        infer = self.abi.RKLLMInferParam(mode=RKLLM_INFER_GET_LAST_HIDDEN_LAYER, keep_history=0)
        for text in texts:
            run_input = self._inputs.embed(text, self.context, truncate)
            listener = _Hidden(self.pooling)
            try:
                self._handle.run(run_input.struct, infer, listener)
            finally:
                self._handle.clear_kv_cache()
            if listener.failed or listener.vector is None:
                raise RkError("model_failed", _RUNTIME_ERROR if listener.failed else "the RKLLM runtime returned no hidden states")
            rows.append(listener.vector)
            counts.append(listener.tokens)
        return EmbedResult(l2_normalise(np.stack(rows)), counts)

    def abort(self) -> None:
        """Called from the runner's reader thread on cancel: rkllm_abort ends the run in progress."""
        self._handle.abort()

    def memory_mb(self) -> float:
        return self._memory or rss_mb()

    def close(self) -> None:
        self._handle.close()

    def _sampling_defaults(self) -> RKLLMSamplingParam:
        s = RKLLMSamplingParam()
        for name, _ in RKLLMSamplingParam._fields_:
            setattr(s, name, getattr(self._param, name))
        return s


def configure(param: Structure, manifest: Manifest) -> Structure:
    """Fill the runtime's default RKLLMParam from the manifest (n_batch=1: a zeroed value is refused)."""
    p = manifest.params
    param.max_context_len = int(p.get("max_context_len", manifest.context_length))
    param.max_new_tokens = int(p.get("max_new_tokens", manifest.context_length))
    if "n_keep" in p:
        param.n_keep = int(p["n_keep"])
    param.skip_special_token = True
    param.is_async = False
    _sampling(GenOptions().over(manifest.defaults), param)
    ext = param.extend_param
    ext.n_batch = 1
    ext.base_domain_id = int(p.get("base_domain_id", 0))
    if "embed_flash" in p:
        ext.embed_flash = int(bool(p["embed_flash"]))
    if "cpus" in p:  # e.g. [4, 5, 6, 7], the big cores of an RK3588
        ext.enabled_cpus_mask = sum(1 << int(c) for c in p["cpus"])
        ext.enabled_cpus_num = len(set(p["cpus"]))
    return param


def load(manifest: Manifest, config: RunnerConfig) -> RkllmModel:
    (model_file,) = check_files(manifest, "model")
    lib, path = open_library(config.rkllm.lib)
    choice = manifest.params.get("runtime")
    version = select_abi(path, lib, manifest_choice=str(choice) if choice else None, setting=config.rkllm.version)
    abi = ABIS[version]
    bind(lib, abi)
    param = configure(lib.rkllm_createDefaultParam(), manifest)
    model_path = str(model_file).encode()
    param.model_path = model_path
    inputs = InputBuilder(manifest, abi)
    handle = Handle(lib, abi, param)
    template = manifest.params.get("chat_template")  # {"system", "prefix", "postfix"}; else the model's own
    try:
        if template:
            handle.set_chat_template(template.get("system", ""), template.get("prefix", ""), template.get("postfix", ""))
    except BaseException:
        handle.close()
        raise
    return RkllmModel(manifest, handle, inputs, param)
