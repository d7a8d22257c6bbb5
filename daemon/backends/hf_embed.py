"""Sentence embeddings on the CPU: mean pooling over the last hidden state, L2-normalised.

Texts are sorted by length and cut into batches under a token budget, so short texts are not
padded to the longest one; results go back in input order.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from rk.daemon.backends.base import EmbedResult, Sink, l2_normalise
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenResult, GenSpec
from rk.daemon.store.models import Manifest

BATCH_TOKENS = 8192
MAX_BATCH = 64


def length_batches(lengths: list[int], budget: int = BATCH_TOKENS, max_batch: int = MAX_BATCH) -> list[list[int]]:
    """Indices grouped shortest first, each group's padded size (count x longest) within `budget`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > budget or len(cur) >= max_batch:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


class HFEmbedModel:
    def __init__(self, manifest: Manifest) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.manifest = manifest
        weights = str(manifest.path("weights"))
        self.tok = AutoTokenizer.from_pretrained(weights)
        self.model = AutoModel.from_pretrained(weights).eval()
        self.max_len = int(manifest.context_length)
        self.chat_template: str | None = None

    @torch.inference_mode()
    def embed(self, texts: list[str], truncate: bool) -> EmbedResult:
        enc = self.tok(texts, truncation=truncate, max_length=self.max_len if truncate else None)
        ids: list[list[int]] = enc["input_ids"]
        lengths = [len(x) for x in ids]
        if not truncate and max(lengths) > self.max_len:
            raise RkError("prompt_too_large", f"an input is {max(lengths)} tokens; {self.manifest.name} takes {self.max_len} "
                          "(set truncate to true)", param="input")
        out = np.zeros((len(texts), int(self.model.config.hidden_size)), dtype=np.float32)
        for batch in length_batches(lengths):
            padded = self.tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            hidden = self.model(**padded).last_hidden_state
            mask = padded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[batch] = pooled.float().numpy()
        return EmbedResult(l2_normalise(out), lengths)

    def generate(self, spec: GenSpec, sink: Sink, stop: threading.Event, prepared: Any = None) -> GenResult:
        raise RkError("internal", f"{self.manifest.name} has no 'completion' capability")  # submit() refuses first

    def abort(self) -> None:
        """Embedding batches are short; there is nothing to interrupt."""

    def prepare(self, spec: GenSpec) -> None:
        """An embedding model serves no chat, so there is nothing to prepare."""

    def details(self) -> dict[str, Any]:
        return {"threads": torch.get_num_threads()}

    def memory_mb(self) -> float:
        return sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20

    def close(self) -> None:
        del self.model
