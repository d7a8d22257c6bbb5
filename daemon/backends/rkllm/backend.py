"""The `rkllm` LoadedModel: chat and embeddings on the NPU through one RKLLM handle.

`rkllm_run` runs synchronously on the runner's main thread; the runner's reader thread calls `abort`,
which calls `rkllm_abort`. A stop string (the runner sets `stop`) or the job's token limit pauses the run
from inside the callback (return 1), which works on 1.2 as well, where max_new_tokens is init-only.

Multi-turn reuse: chats run with keep_history=1, so the conversation stays in the runtime's KV cache.
`_Kv` remembers the key of what the cache holds (see `_inputs`); a job whose conversation continues it
sends only its new message, any other job clears the cache and sends everything, so no job ever sees
another's context. One cache per handle: interleaved conversations each rebuild (no prompt-cache files,
see docs/rkllm.md). Embedding runs (keep_history=0) and failed or paused runs forget the cache.

Sampling: 1.3 takes it per run (RKLLMSamplingParam); on 1.2 it is fixed at rkllm_init, so a job whose
sampling differs from the handle's re-initialises the handle (never silently drops it).
"""
from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from ctypes import Structure, pointer
from typing import Any

import numpy as np

from rk.daemon.backends.base import EmbedResult, RunnerConfig, Sink, check_files, l2_normalise
from rk.daemon.backends.rkllm._handle import Handle
from rk.daemon.backends.rkllm._inputs import InputBuilder, Key, tools_json
from rk.daemon.backends.rkllm._lib import (
    ABIS,
    CALLBACK_CONTINUE,
    CALLBACK_PAUSE,
    RKLLM_INFER_GENERATE,
    RKLLM_INFER_GET_LAST_HIDDEN_LAYER,
    RKLLM_RUN_ERROR,
    RKLLM_RUN_FINISH,
    RKLLM_RUN_NORMAL,
    RKLLM_RUN_WAITING,
    Abi,
    RKLLMPerfStat,
    RKLLMResult,
    RKLLMSamplingParam,
    bind,
)
from rk.daemon.backends.rkllm._version import Detected, open_library, select_abi
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenResult, GenSpec
from rk.daemon.procinfo import rss_mb
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.rkllm")

_RUNTIME_ERROR = "the RKLLM runtime reported an error during the run (its log on stderr says why)"
_POOLINGS = ("last", "mean")
# The RKLLMParam fields a job's options set (the rest of RKLLMSamplingParam stays at the init values).
SAMPLING_FIELDS = ("top_k", "top_p", "temperature", "repeat_penalty")


class _Generation:
    """Listener of one generate run: decodes text incrementally, counts tokens, keeps FINISH's perf."""

    def __init__(self, sink: Sink, stop: threading.Event, limit: int, prompt_tokens: int | None, cached: int) -> None:
        self.sink, self.stop, self.limit, self.prompt_tokens, self.cached = sink, stop, limit, prompt_tokens, cached
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.tokens = 0
        self.token_ids: list[int] = []
        self.pieces: list[str] = []
        self.perf: RKLLMPerfStat | None = None
        self.failed = False

    def __call__(self, result: RKLLMResult, state: int) -> int:
        if state in (RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING):
            self._first_token()
            self.tokens += 1
            self.token_ids.append(int(result.token_id))
            if state == RKLLM_RUN_NORMAL and result.text:  # WAITING's text is ignored: the character comes later
                self._emit(self.decoder.decode(ctypes.string_at(result.text)))
        elif state == RKLLM_RUN_FINISH:
            self.perf = RKLLMPerfStat.from_buffer_copy(result.perf)
        elif state == RKLLM_RUN_ERROR:
            self.failed = True
        if self.stop.is_set() or self.tokens >= self.limit:
            return CALLBACK_PAUSE
        return CALLBACK_CONTINUE

    def _emit(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            self.sink.token(text)

    @property
    def finished(self) -> bool:
        """The runtime ended the run itself (FINISH), so its KV cache holds the whole reply and nothing pending."""
        return self.perf is not None and not self.failed

    def _first_token(self) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self.sink.prefill((self.t_first - self.t0) * 1000, self.prompt_tokens or 0, self.cached)

    def result(self) -> GenResult:
        self._emit(self.decoder.decode(b"", final=True))
        self._first_token()  # a run that produced no token still reports its prefill once
        finish = "length" if self.tokens >= self.limit else "stop"
        if self.perf is not None:
            p = self.perf
            return GenResult(prefill_ms=p.prefill_time_ms, prefill_tokens=p.prefill_tokens, cached_tokens=self.cached,
                             generate_ms=p.generate_time_ms, generate_tokens=p.generate_tokens,
                             memory_mb=p.memory_usage_mb or rss_mb(), finish_reason=finish)
        assert self.t_first is not None
        return GenResult(prefill_ms=(self.t_first - self.t0) * 1000, prefill_tokens=self.prompt_tokens or 0,
                         cached_tokens=self.cached, generate_ms=(time.perf_counter() - self.t_first) * 1000,
                         generate_tokens=self.tokens, memory_mb=rss_mb(), finish_reason=finish)


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


def sampling_of(s: Structure) -> tuple[float, ...]:
    """The job-settable sampling values of an RKLLMParam / RKLLMSamplingParam (as the C floats hold them)."""
    return tuple(getattr(s, f) for f in SAMPLING_FIELDS)


class _Kv:
    """What the handle's KV cache holds: the key of a conversation and the cache size it left, or nothing."""

    def __init__(self) -> None:
        self.key: Key | None = None
        self.size = 0

    def held(self, handle: Handle) -> Key | None:
        """The key, if the runtime's cache still has exactly the size the last run left (else trust nothing)."""
        if self.key is not None and handle.kv_cache_size() != self.size:
            log.warning("KV cache holds %d positions, expected %d: rebuilding", handle.kv_cache_size(), self.size)
            self.key = None
        return self.key

    def hold(self, key: Key, size: int) -> None:
        self.key, self.size = key, size

    def forget(self) -> None:
        self.key, self.size = None, 0


class RkllmModel:
    def __init__(self, manifest: Manifest, lib: ctypes.CDLL, detected: Detected, param: Structure,
                 inputs: InputBuilder) -> None:
        self.manifest, self._lib, self.detected, self._inputs = manifest, lib, detected, inputs
        # The runtime keeps its template inside the .rkllm file; a shipped tokenizer's is the one we know.
        self.chat_template: str | None = getattr(inputs.tokenizer, "chat_template", None)
        self.pooling = str(manifest.params.get("pooling", "last"))
        if self.pooling not in _POOLINGS:
            raise RkError("model_failed", f"{manifest.name}: params.pooling must be one of {', '.join(_POOLINGS)}")
        self._base = param  # the manifest's configuration; each job's sampling starts from it
        self._handle = self._open(param)
        self.context = int(param.max_context_len)
        self.max_new = int(param.max_new_tokens) if param.max_new_tokens > 0 else self.context
        self.prefix_cache = bool(manifest.params.get("prefix_cache", True))
        self._kv = _Kv()
        self._tools: tuple[str, str] | None = None  # (system prompt, tools JSON) the handle was last given
        self._memory = 0.0
        self.reinits = 0  # 1.2 handles re-created for a job's sampling
        self.last_cached = 0  # KV positions the last chat reused (its GenResult.cached_tokens)

    @property
    def abi(self) -> Abi:
        return self._handle.abi

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        opts = spec.options
        wanted = _sampling(opts, type(self._base).from_buffer_copy(self._base))
        if not self.abi.sampling_per_run and sampling_of(wanted) != sampling_of(self._handle.param):
            self._reinit(wanted)
        if not self._inputs.sends_tokens:  # token input renders tools with the tokenizer's template instead
            self._offer_tools(spec)
        reuse = self.prefix_cache if opts.cache_prompt is None else opts.cache_prompt
        chat = self._inputs.chat(spec, self.context, self._kv.held(self._handle) if reuse else None)
        if not chat.reused:
            self._forget()
        self.last_cached = self._kv.size if chat.reused else 0
        limit = self.max_new if opts.max_tokens is None else max(1, min(opts.max_tokens, self.max_new))
        infer = self.abi.RKLLMInferParam(mode=RKLLM_INFER_GENERATE, keep_history=1)
        if self.abi.sampling_per_run:
            per_run = RKLLMSamplingParam()
            for name, _ in RKLLMSamplingParam._fields_:
                setattr(per_run, name, getattr(wanted, name))
            infer.sampling_params = pointer(per_run)
            infer.max_new_tokens = limit
        listener = _Generation(sink, stop, limit, chat.run.tokens, self.last_cached)
        try:
            self._handle.run(chat.run.struct, infer, listener)
        except BaseException:
            self._forget()
            raise
        if listener.failed:
            self._forget()
            raise RkError("model_failed", _RUNTIME_ERROR)
        result = listener.result()
        if listener.finished:
            self._kv.hold(chat.key + self._inputs.reply_key("".join(listener.pieces), listener.token_ids),
                          self._handle.kv_cache_size())
        else:  # paused (stop, limit or abort): the cache holds a cut reply and a pending run
            self._forget()
        self._memory = result.memory_mb
        return result

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        """Hidden states of the last layer, pooled and L2-normalised; any chat model answers these too."""
        self._forget()  # keep_history=0 runs end whatever conversation the cache held
        rows: list[np.ndarray] = []
        counts: list[int] = []
        infer = self.abi.RKLLMInferParam(mode=RKLLM_INFER_GET_LAST_HIDDEN_LAYER, keep_history=0)
        for text in texts:
            run_input = self._inputs.embed(text, self.context, truncate)
            listener = _Hidden(self.pooling)
            try:
                self._handle.run(run_input.struct, infer, listener)
            finally:
                self._handle.clear_kv_cache()  # rknn-llm #278: each embedding run starts from an empty cache
            if listener.failed or listener.vector is None:
                raise RkError("model_failed",
                              _RUNTIME_ERROR if listener.failed else "the RKLLM runtime returned no hidden states")
            rows.append(listener.vector)
            counts.append(listener.tokens)
        return EmbedResult(l2_normalise(np.stack(rows)), counts)

    def abort(self) -> None:
        """Called from the runner's reader thread on cancel: rkllm_abort ends the run in progress."""
        self._handle.abort()

    def prepare(self, spec: GenSpec) -> None:
        """The runtime templates and tokenises inside `rkllm_run`; nothing can be done ahead."""

    def details(self) -> dict[str, Any]:
        return {"runtime": self.detected.version or self.detected.abi, "num_ctx": self.context}

    def memory_mb(self) -> float:
        return self._memory or rss_mb()

    def close(self) -> None:
        self._handle.close()

    def _open(self, param: Structure) -> Handle:
        """rkllm_init with `param`, then the manifest's chat template, if any."""
        encode = self._inputs.encode if self._inputs.via_callback else None
        handle = Handle(self._lib, self._inputs.abi, param, encode)
        template = self.manifest.params.get("chat_template")  # {"system", "prefix", "postfix"}; else the model's own
        try:
            if template:
                handle.set_chat_template(template.get("system", ""), template.get("prefix", ""), template.get("postfix", ""))
        except BaseException:
            handle.close()
            raise
        return handle

    def _offer_tools(self, spec: GenSpec) -> None:
        """Give the runtime this request's tools with `rkllm_set_function_tools`, only when the set changes.

        A request without tools after one with them sets an empty list, so the model is not offered
        tools nobody asked for. The KV cache was built under the old system prompt, so it is dropped.
        """
        tools = tools_json(spec)
        wanted = None if tools is None and self._tools is None else (
            next((m.content for m in spec.chat_messages() if m.role == "system"), ""), tools or "[]")
        if wanted == self._tools:
            return
        self._forget()
        if wanted is not None:
            self._handle.set_function_tools(*wanted)
        self._tools = wanted

    def _reinit(self, param: Structure) -> None:
        """1.2: sampling is fixed at rkllm_init, so a job that wants other values gets a new handle."""
        t0 = time.perf_counter()
        self._forget()
        previous = self._handle.param
        self._handle.close()  # first: a board may not hold the model twice
        self._tools = None  # a new handle has no tools
        try:
            self._handle = self._open(param)
        except RkError:
            self._handle = self._open(previous)  # the model stays usable with the sampling it had
            raise
        self.reinits += 1
        log.info("re-initialised the RKLLM handle for sampling %s in %.1f ms (runtime 1.2 fixes sampling at init)",
                 dict(zip(SAMPLING_FIELDS, sampling_of(param))), (time.perf_counter() - t0) * 1000)

    def _forget(self) -> None:
        if self._kv.key is not None or self._handle.kv_cache_size():
            self._handle.clear_kv_cache()
        self._kv.forget()


def configure(param: Structure, manifest: Manifest, num_ctx: int | None = None) -> Structure:
    """Fill the runtime's default RKLLMParam from the manifest (n_batch=1: a zeroed value is refused).

    The context is fixed at init: a larger one is a reload, never past what the model was converted for."""
    p = manifest.params
    most = int(p.get("max_context_len", manifest.context_length))
    param.max_context_len = min(num_ctx or most, most)
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


def load(manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> RkllmModel:
    (model_file,) = check_files(manifest, "model")
    lib, path = open_library(config.rkllm.lib)
    choice = manifest.params.get("runtime")
    detected = select_abi(path, lib, manifest_choice=str(choice) if choice else None, setting=config.rkllm.version)
    abi = ABIS[detected.abi]
    bind(lib, abi)
    param = configure(lib.rkllm_createDefaultParam(), manifest, num_ctx)
    model_path = str(model_file).encode()
    param.model_path = model_path  # ctypes keeps `model_path` alive with the struct (its _objects)
    return RkllmModel(manifest, lib, detected, param, InputBuilder(manifest, abi))
