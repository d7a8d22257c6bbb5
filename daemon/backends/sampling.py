"""Next-token choice from logits: greedy at temperature 0, else temperature / top-k / top-p with a seeded generator."""
from __future__ import annotations

import torch

from rk.daemon.jobs import GenOptions


def next_token(logits: torch.Tensor, opts: GenOptions, history: list[int], gen: torch.Generator | None) -> int:
    logits = logits.float()
    if opts.repeat_penalty and opts.repeat_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history)), dtype=torch.long)
        picked = logits[idx]
        logits[idx] = torch.where(picked > 0, picked / opts.repeat_penalty, picked * opts.repeat_penalty)
    if not opts.temperature:
        return int(torch.argmax(logits))
    logits = logits / opts.temperature
    if opts.top_k and opts.top_k > 0:
        kth = torch.topk(logits, min(opts.top_k, logits.numel())).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, -float("inf")), logits)
    probs = torch.softmax(logits, dim=-1)
    if opts.top_p is not None and 0 < opts.top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        drop = cum - sorted_p > opts.top_p  # keep the smallest set whose mass reaches top_p
        sorted_p[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))
