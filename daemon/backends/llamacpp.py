"""The `llamacpp` backend: GGUF chat and embeddings on llama.cpp (llama-cpp-python), straight from the file.

No conversion: the GGUF is memory-mapped and serves its first token in about a second. The chat
template is the GGUF's own (`tokenizer.chat_template`), or a Jinja template the manifest gives in
`params.chat_template` (the same weights taught another format, e.g. one that renders tools), rendered by llama-cpp-python's Jinja
formatter exactly as its own chat completion does. Decoding is llama-cpp-python's `generate` loop with
the stop event checked before every token (and between prompt chunks during prefill). The common
prefix of consecutive prompts stays in the KV cache; a few saved states keep interleaved
conversations from evicting each other (`llamacpp_kv`). A chat model embeds through a second, small
llama.cpp context on the same weights, created on first use, so chatting costs no extra memory.
Structured output is constrained by llguidance's token mask built from the JSON schema (as on hf), so
it is valid by construction; llama-cpp-python's own GBNF converter ignores bounds such as `maximum`.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

import llama_cpp
import numpy as np
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from rk.daemon.backends.base import EmbedResult, RunnerConfig, Sink, check_files, l2_normalise, reusable_prefix
from rk.daemon.backends.constrained import JsonConstraint, tokenizer_for_llama
from rk.daemon.backends.cpufeatures import choose_repack, read_cpu_features
from rk.daemon.backends.cputhreads import choose_threads
from rk.daemon.backends.llamacpp_kv import PrefixStates, restore_sequence, save_sequence
from rk.daemon.backends.utf8 import Utf8Stream
from rk.daemon.context import configured_context, prompt_too_large
from rk.daemon.errors import RkError
from rk.daemon.gotemplate import render
from rk.daemon.jobs import GenOptions, GenResult, GenSpec
from rk.daemon.procinfo import rss_mb
from rk.daemon.store.models import Manifest

DEFAULT_CTX = 4096  # KV cache size when loaded without a context (direct loads; the daemon always names one)
BATCH = 512  # tokens per llama_decode call during prefill (llama.cpp's default n_batch)
PREFILL_CHUNK = 64  # prompt tokens per eval, so a cancel is seen during a long prefill too
PROGRESS_CHUNKS = 8  # chunks between two `prefilling` reports (512 tokens)
EMBED_CTX = 512  # token window of a chat model's embedding context
MIN_SAVE_TOKENS = 32  # a sequence shorter than this is cheaper to prefill again than to save
POOLING = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
           "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS}
# llama-cpp-python's own sampling defaults, for options neither the job nor the model sets.
SAMPLING_DEFAULTS = GenOptions(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)


def template_kwargs(spec: GenSpec) -> dict[str, Any]:
    """What the GGUF's Jinja template gets besides the messages: the tools, and the thinking switch."""
    kw: dict[str, Any] = {}
    if spec.tools:
        kw["tools"] = [t.template_dict() for t in spec.tools]
    if spec.think is not None:
        kw["enable_thinking"] = bool(spec.think)
    return kw


def sampling(opts: GenOptions) -> dict[str, Any]:
    """`Llama.generate` keyword arguments; temperature 0 is greedy."""
    o = {k: v for k, v in opts.set().items() if k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")}
    full = replace(SAMPLING_DEFAULTS, **o)
    return {"temp": float(full.temperature or 0.0), "top_k": int(full.top_k or 0), "top_p": float(full.top_p),
            "min_p": float(full.min_p), "repeat_penalty": float(full.repeat_penalty)}


@contextlib.contextmanager
def model_params(**fields: Any) -> Iterator[None]:
    """`Llama()` takes no keyword for some `llama_model_params` fields (`use_extra_bufts`) and builds them
    from `llama_model_default_params()`: while it loads, those defaults carry `fields`."""
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def params() -> llama_cpp.llama_model_params:
        p = default()
        for name, value in fields.items():
            setattr(p, name, value)
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


class LlamaCppModel:
    def __init__(self, manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> None:
        (gguf,) = check_files(manifest, "gguf")
        self.manifest = manifest
        self.threads = config.cpu.threads or choose_threads(config.sysfs_root)
        self.repack = choose_repack(config.cpu.repack, read_cpu_features(config.sysfs_root), config.cpu.safe)
        self.embed_only = not manifest.can("completion")
        self.pooling = POOLING.get(str(manifest.params.get("pooling", "")), llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)
        n_ctx = num_ctx or configured_context(manifest, DEFAULT_CTX)
        batch = n_ctx if self.embed_only else min(BATCH, n_ctx)  # an embedding input must fit one batch
        with model_params(use_extra_bufts=self.repack.on):  # a model param: the embedding context shares it
            self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=batch, n_ubatch=batch,
                             n_threads=self.threads, n_threads_batch=self.threads, embedding=self.embed_only,
                             pooling_type=self.pooling if self.embed_only else llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
                             verbose=False)
        if self.llm.model_params.use_extra_bufts != self.repack.on:
            raise RkError("internal", "llama-cpp-python no longer takes use_extra_bufts from its default params")
        self.n_ctx = self.llm.n_ctx()
        self.prefix_cache = bool(manifest.params.get("prefix_cache", True))
        self.states = PrefixStates(int(manifest.params.get("prefix_states", 4)))
        self.held_media: tuple[str, ...] = ()  # digests of the images of the prompt in the KV cache
        self.chat_template: str | None = (str(manifest.params.get("chat_template") or "")
                                          or self.llm.metadata.get("tokenizer.chat_template") or None)
        self.formatter = self._formatter()
        self._lltok: Any = None  # llguidance's tokenizer, built on the first structured-output request
        self._embedder: Embedder | None = Embedder(self.llm._ctx, self.llm._model, batch) if self.embed_only else None

    def _formatter(self) -> Jinja2ChatFormatter | None:
        """The GGUF's chat template, set up the way `Llama` sets up its `chat_template.default` handler."""
        template = self.chat_template
        if not template:
            return None

        def text(token: int) -> str:
            return self.llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        return Jinja2ChatFormatter(template=template, eos_token=text(eos), bos_token=text(bos), stop_token_ids=[eos])

    def _constraint(self, spec: GenSpec) -> JsonConstraint | None:
        """The token mask for a request's `format`; llguidance's view of the vocabulary is built once."""
        if spec.format is None:
            return None
        if self._lltok is None:
            self._lltok = tokenizer_for_llama(self.llm._model.vocab)
        return JsonConstraint(self._lltok, spec.format, arrays="numpy")

    def details(self) -> dict[str, Any]:
        """Shown with the loaded model in `rk status` / `rk ps`."""
        return {"threads": self.threads, "num_ctx": self.n_ctx, "repack": str(self.repack)}

    # ---- chat ----------------------------------------------------------------------------------

    def prepare(self, spec: GenSpec) -> list[int]:
        """Template and tokenise (the runner calls this ahead, while the job before generates)."""
        if spec.raw and spec.prompt is not None:
            return self.llm.tokenize(spec.prompt.encode("utf-8"), add_bos=True, special=True)
        chat = spec.chat_messages()
        if self.manifest.template:  # a Modelfile TEMPLATE wins over the GGUF's; BOS as the model wants it
            text = render(self.manifest.template, chat, spec.tools, None if spec.think is None else bool(spec.think))
            return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        if self.formatter is None:
            raise RkError("bad_request", f"{self.manifest.name} has no chat template in its GGUF; send a raw prompt",
                          param="messages")
        try:
            text = self.formatter(messages=[m.template_dict() for m in chat], **template_kwargs(spec)).prompt
        except Exception as e:  # noqa: BLE001 - a template is the model's code: raise_exception (roles must alternate) or any bug
            raise RkError("bad_request", f"{self.manifest.name}'s chat template refused the messages: {e}",
                          param="messages") from None
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # the template adds BOS itself

    def _reuse(self, ids: list[int], media: tuple[str, ...], enabled: bool) -> int:
        """Put the longest available prefix of `ids` (whose prompt carries the images `media`) into the KV
        cache and return its length; at least one token is left to evaluate, so sampling starts from fresh
        logits."""
        llm = self.llm
        held = llm.input_ids[:llm.n_tokens].tolist()
        here = reusable_prefix(held, self.held_media, ids, media) if enabled else 0
        saved, there = self.states.best(ids, media) if enabled else (None, 0)
        leaving = len(held) - here
        if enabled and len(held) >= MIN_SAVE_TOKENS and (leaving * 2 > len(held) or there > here):
            llm._ctx.kv_cache_seq_rm(0, llm.n_tokens, -1)
            self.states.put(held, self.held_media, save_sequence(llm.ctx))  # another conversation: keep it for later
        self.held_media = media
        keep = here
        if saved is not None and there > here:
            if restore_sequence(llm.ctx, saved.blob):
                llm.input_ids[:len(saved.tokens)] = saved.tokens
                keep = there
            else:
                keep = 0  # llama.cpp refused the state: the sequence is empty, prefill it all
        llm.n_tokens = min(keep, len(ids) - 1)
        return llm.n_tokens

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        if self.embed_only:
            raise RkError("internal", f"{self.manifest.name} has no 'completion' capability")  # submit() refuses first
        ids: list[int] = prepared if prepared is not None else self.prepare(spec)
        opts = spec.options
        ctx = min(opts.num_ctx or self.n_ctx, self.n_ctx)
        if len(ids) >= ctx:
            raise prompt_too_large(self.manifest.name, len(ids), ctx)
        budget = ctx - len(ids)
        max_new = budget if opts.max_tokens is None else min(opts.max_tokens, budget)
        self.llm.set_seed(opts.seed if opts.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        t0 = time.perf_counter()
        cached, evaluated = self._prefill(ids, spec, sink, stop)
        prefill_ms = (time.perf_counter() - t0) * 1000
        if evaluated < len(ids):  # stopped between prompt chunks
            return GenResult(prefill_ms=prefill_ms, prefill_tokens=evaluated - cached, cached_tokens=cached,
                             memory_mb=self.memory_mb())
        sink.prefill(prefill_ms, len(ids) - cached, cached)
        t1 = time.perf_counter()
        n, finish = self._decode(spec, sink, stop, max_new)
        return GenResult(prefill_ms=prefill_ms, prefill_tokens=len(ids) - cached, cached_tokens=cached,
                         generate_ms=(time.perf_counter() - t1) * 1000, generate_tokens=n, memory_mb=self.memory_mb(),
                         finish_reason=finish)

    @contextlib.contextmanager
    def _reset_on_error(self) -> Iterator[None]:
        """An eval that failed or was interrupted leaves the KV cache unknown: forget it."""
        try:
            yield
        except BaseException:
            self.llm.reset()
            raise

    def _prefill(self, ids: list[int], spec: GenSpec, sink: Sink, stop: threading.Event) -> tuple[int, int]:
        """Evaluate the prompt past its cached prefix in chunks, checking `stop` between them and reporting progress
        every few; returns the cached length and how far evaluation got (short of the prompt's end only when stopped)."""
        opts = spec.options
        with self._reset_on_error():
            cached = self._reuse(ids, spec.media(), self.prefix_cache if opts.cache_prompt is None else opts.cache_prompt)
            for n, i in enumerate(range(cached, len(ids), PREFILL_CHUNK), 1):
                if stop.is_set():
                    return cached, i
                self.llm.eval(ids[i:i + PREFILL_CHUNK])
                if n % PROGRESS_CHUNKS == 0:  # a long prompt: the job is alive, and clients see how far it got
                    sink.prefilling(i + PREFILL_CHUNK - cached, len(ids) - cached)
        return cached, len(ids)

    def _decode(self, spec: GenSpec, sink: Sink, stop: threading.Event, max_new: int) -> tuple[int, str]:
        """Sample from the prefill's logits on, until EOG, `stop`, a finished JSON value or `max_new` tokens;
        returns the number of tokens and the finish reason."""
        llm = self.llm
        vocab = llm._model.vocab
        text = Utf8Stream()
        n, finish = 0, "length"
        constraint = self._constraint(spec)
        masks = LogitsProcessorList([constraint.masked]) if constraint is not None else None
        tokens = llm.generate([], reset=False, logits_processor=masks, **sampling(spec.options))  # the prefill's logits first
        try:
            with self._reset_on_error():
                while n < max_new:
                    if stop.is_set():
                        finish = "stop"
                        break
                    tok = next(tokens)
                    if llama_cpp.llama_vocab_is_eog(vocab, tok):
                        finish = "stop"
                        break
                    n += 1
                    piece = text.push(llm.detokenize([tok]))
                    if piece:
                        sink.token(piece)
                    if constraint is not None:
                        constraint.accept(tok, 0)
                        if constraint.complete:  # the JSON value is finished: nothing may follow it
                            finish = "stop"
                            break
                tail = text.flush()
                if tail:
                    sink.token(tail)
        finally:
            tokens.close()
        return n, finish

    # ---- embeddings ----------------------------------------------------------------------------

    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        if self._embedder is None:
            self._embedder = Embedder.second_context(self.llm, self.pooling, self.threads)
        window = self._embedder.window
        ids = [self.llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in texts]
        longest = max((len(x) for x in ids), default=0)
        if longest > window and not truncate:
            raise RkError("prompt_too_large", f"an input is {longest} tokens; {self.manifest.name} embeds at most {window} "
                          "(set truncate to true)", param="input")
        ids = [x[:window] or [self.llm.token_bos()] for x in ids]
        return EmbedResult(l2_normalise(self._embedder.run(ids)), [len(x) for x in ids])

    def abort(self) -> None:
        """Generation checks the stop event before every token and prompt chunk; nothing else to interrupt."""

    def memory_mb(self) -> float:
        """The runner's resident memory: llama.cpp's weights (mmap), KV caches and saved states all count."""
        return rss_mb()

    def close(self) -> None:
        if self._embedder is not None and not self.embed_only:
            self._embedder.close()
        self.states.clear()
        self.llm.close()


class Embedder:
    """Pooled, batched embeddings on one llama.cpp context: several sequences per decode call."""

    def __init__(self, ctx: Any, model: Any, window: int, owns: bool = False) -> None:
        from llama_cpp._internals import LlamaBatch

        self.ctx, self.model, self.window, self._owns = ctx, model, window, owns
        self.n_seq = max(1, min(64, llama_cpp.llama_max_parallel_sequences(), ctx.params.n_seq_max))
        self.batch = LlamaBatch(n_tokens=window, embd=0, n_seq_max=self.n_seq, verbose=False)

    @classmethod
    def second_context(cls, llm: Llama, pooling: int, threads: int) -> Embedder:
        """A small embedding context on a chat model's already loaded weights (no second copy of them)."""
        from llama_cpp._internals import LlamaContext

        params = llama_cpp.llama_context_default_params()
        window = min(EMBED_CTX, llm.n_ctx())
        params.n_ctx = params.n_batch = params.n_ubatch = window
        params.n_seq_max = 16
        params.kv_unified = True
        params.embeddings = True
        unspecified = pooling == llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_LAST if unspecified else pooling
        params.n_threads = params.n_threads_batch = threads
        return cls(LlamaContext(model=llm._model, params=params, verbose=False), llm._model, window, owns=True)

    def run(self, ids: list[list[int]]) -> np.ndarray:
        dim = llama_cpp.llama_model_n_embd(self.model.model)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        group: list[int] = []
        used = 0
        for i, x in enumerate(ids):
            if group and (used + len(x) > self.window or len(group) >= self.n_seq):
                self._decode(ids, group, out)
                group, used = [], 0
            group.append(i)
            used += len(x)
        if group:
            self._decode(ids, group, out)
        return out

    def _decode(self, ids: list[list[int]], group: list[int], out: np.ndarray) -> None:
        self.ctx.kv_cache_clear()
        self.batch.reset()
        for seq, i in enumerate(group):
            self.batch.add_sequence(ids[i], seq, True)
        self.ctx.decode(self.batch)
        dim = out.shape[1]
        for seq, i in enumerate(group):
            ptr = llama_cpp.llama_get_embeddings_seq(self.ctx.ctx, seq)
            out[i] = np.ctypeslib.as_array(ptr, shape=(dim,))

    def close(self) -> None:
        self.batch.close()
        if self._owns:
            self.ctx.close()


def load(manifest: Manifest, config: RunnerConfig, num_ctx: int | None = None) -> LlamaCppModel:
    return LlamaCppModel(manifest, config, num_ctx)
