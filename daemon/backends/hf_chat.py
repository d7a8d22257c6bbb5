"""Chat (and embeddings from the same weights) on the CPU with transformers: a token loop over a KV
cache that keeps the last sequence's prefix.

A follow-up turn shares its whole history with the previous sequence, so only the new tokens are
prefilled (`params.prefix_cache`, on by default; the `cache_prompt` option overrides it per job). Text is
streamed through an incremental detokeniser that never splits a multi-byte character.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from rk.daemon.backends.base import EmbedResult, Sink, check_files, l2_normalise, reusable_prefix
from rk.daemon.backends.constrained import JsonConstraint, tokenizer_for
from rk.daemon.backends.hf_convert import ensure_converted
from rk.daemon.backends.sampling import next_token
from rk.daemon.context import prompt_too_large
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenResult, GenSpec
from rk.daemon.store.models import Manifest


class Detokenizer:
    """Turns a growing list of token ids into text deltas, holding back incomplete characters."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


class HFChatModel:
    def __init__(self, manifest: Manifest, num_ctx: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.manifest = manifest
        self.n_ctx = min(num_ctx or manifest.context_length, manifest.context_length)  # a limit only: the cache grows
        weights = manifest.path("weights")
        if "gguf" in manifest.files:
            (gguf,) = check_files(manifest, "gguf")
            ensure_converted(gguf, weights)
        # float32 by default: prefix reuse then gives the same greedy text as a cold prefill (bf16
        # rounding differs between batched and one-token passes), and the Cortex-A76/A55 cores of
        # RK3588/RK3576 have no bf16 arithmetic anyway. `params.dtype: bfloat16` trades that for speed
        # on CPUs with AVX512_BF16.
        dtype = getattr(torch, manifest.params.get("dtype", "float32"))
        self.tok = AutoTokenizer.from_pretrained(str(weights))
        self.model = AutoModelForCausalLM.from_pretrained(str(weights), dtype=dtype).eval()
        self.chat_template: str | None = self.tok.chat_template
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tok.eos_token_id}
        self.eos.discard(None)
        self.prefix_cache = bool(manifest.params.get("prefix_cache", True))
        self.pooling = str(manifest.params.get("pooling", "last"))
        self._cache: Any = None
        self._cached_ids: list[int] = []
        self._cached_media: tuple[str, ...] = ()  # digests of the images in the cached prompt
        self._lltok: Any = None  # llguidance's tokenizer, built on the first structured-output request

    def prepare(self, spec: GenSpec) -> list[int]:
        """Template and tokenise the prompt (the runner calls this ahead, while the job before generates)."""
        if spec.prompt is not None and spec.raw:
            return list(self.tok(spec.prompt)["input_ids"])
        messages = [m.template_dict() for m in spec.chat_messages()]
        extra: dict[str, Any] = {}
        if spec.tools:
            extra["tools"] = [t.template_dict() for t in spec.tools]
        if spec.think is not None:
            extra["enable_thinking"] = bool(spec.think)
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _prepare_cache(self, ids: list[int], media: tuple[str, ...], reuse: bool) -> int:
        """Reuse the cached KV of the longest shared prefix (at least one token is always prefilled)."""
        from transformers import DynamicCache

        keep = reusable_prefix(self._cached_ids, self._cached_media, ids[:-1], media) if reuse and self._cache is not None else 0
        self._cached_media = media
        if keep == 0:
            self._cache = DynamicCache()
        elif len(self._cached_ids) > keep:
            self._cache.crop(-(len(self._cached_ids) - keep))
        self._cached_ids = ids[:keep]
        return keep

    def _forward(self, ids: list[int]) -> torch.Tensor:
        out = self.model(input_ids=torch.tensor([ids]), past_key_values=self._cache, use_cache=True)
        self._cached_ids.extend(ids)
        return out.logits[0, -1]

    @torch.inference_mode()
    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        opts = spec.options
        ids: list[int] = prepared if prepared is not None else self.prepare(spec)
        ctx = min(opts.num_ctx or self.n_ctx, self.n_ctx)
        if len(ids) >= ctx:
            raise prompt_too_large(self.manifest.name, len(ids), ctx)
        budget = ctx - len(ids)
        max_new = budget if opts.max_tokens is None else min(opts.max_tokens, budget)
        gen = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
        t0 = time.perf_counter()
        with self._forget_cache_on_error():
            keep = self._prepare_cache(ids, spec.media(), self.prefix_cache if opts.cache_prompt is None else opts.cache_prompt)
            logits = self._forward(ids[keep:])
        prefill_ms = (time.perf_counter() - t0) * 1000
        sink.prefill(prefill_ms, len(ids) - keep, keep)
        detok = Detokenizer(self.tok)
        constraint = self._constraint(spec)
        t1 = time.perf_counter()
        with self._forget_cache_on_error():
            out, finish = self._decode(logits, ids, max_new, opts, gen, constraint, detok, sink, stop)
        return GenResult(prefill_ms=prefill_ms, prefill_tokens=len(ids) - keep, cached_tokens=keep,
                         generate_ms=(time.perf_counter() - t1) * 1000, generate_tokens=len(out),
                         memory_mb=self.memory_mb(), finish_reason=finish)

    @contextlib.contextmanager
    def _forget_cache_on_error(self) -> Iterator[None]:
        """A forward pass that failed or was interrupted leaves the KV cache unknown: drop it."""
        try:
            yield
        except BaseException:
            self._cache, self._cached_ids = None, []
            raise

    def _decode(self, logits: torch.Tensor, ids: list[int], max_new: int, opts: GenOptions, gen: torch.Generator | None,
                constraint: JsonConstraint | None, detok: Detokenizer, sink: Sink,
                stop: threading.Event) -> tuple[list[int], str]:
        """Sample and forward token by token; returns the new tokens and the finish reason."""
        out: list[int] = []
        while len(out) < max_new:
            if stop.is_set():
                return out, "stop"
            if constraint is not None:
                constraint.mask(logits)
            tid = next_token(logits, opts, ids + out, gen)
            if tid in self.eos:
                return out, "stop"
            step = [tid]
            if constraint is not None:  # the grammar's forced continuation comes in the same forward pass
                step += constraint.accept(tid, room=max_new - len(out) - 1)
            for t in step:
                out.append(t)
                text = detok.push(t)
                if text:
                    sink.token(text)
            if constraint is not None and constraint.complete:
                return out, "stop"
            if len(out) < max_new and not stop.is_set():
                logits = self._forward(step)
        return out, "length"

    def _constraint(self, spec: GenSpec) -> JsonConstraint | None:
        """The grammar that keeps this reply valid JSON of the requested schema, if the request has a format."""
        if spec.format is None:
            return None
        if self._lltok is None:
            self._lltok = tokenizer_for(self.tok)
        return JsonConstraint(self._lltok, spec.format)

    @torch.inference_mode()
    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        """Pooled last hidden layer of the same loaded weights (`params.pooling`: last or mean); the chat
        KV cache is not touched, so a conversation continues as if no embedding ran in between."""
        ctx = self.manifest.context_length
        rows, counts = [], []
        for text in texts:
            ids = list(self.tok(text)["input_ids"])
            if len(ids) > ctx:
                if not truncate:
                    raise RkError("prompt_too_large", f"an input is {len(ids)} tokens; {self.manifest.name} takes {ctx}",
                                  param="input")
                ids = ids[:ctx]
            hidden = self.model.base_model(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0]
            rows.append((hidden[-1] if self.pooling == "last" else hidden.mean(0)).float().numpy())
            counts.append(len(ids))
        return EmbedResult(l2_normalise(np.stack(rows)), counts)

    def abort(self) -> None:
        """Generation checks the stop event before every token; nothing else to interrupt."""

    def details(self) -> dict[str, Any]:
        return {"threads": torch.get_num_threads(), "dtype": str(self.model.dtype).removeprefix("torch.")}

    def memory_mb(self) -> float:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        cache = sum(t.numel() * t.element_size() for layer in getattr(self._cache, "layers", []) for t in
                    (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, torch.Tensor))
        return (params + cache) / 2**20

    def close(self) -> None:
        self._cache = None
        del self.model
