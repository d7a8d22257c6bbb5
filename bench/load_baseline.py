"""Baseline for cached model load: a fresh Python loading the same weights with plain transformers.

It mirrors the runner: import torch + transformers, load the chat model, then the embedding model
in the same process. Prints three figures in milliseconds: imports, chat load, embed load, so each
matches the runner's `load_ms` (its first hf model pays for the imports, the second does not).
Usage: python -m bench.load_baseline CHAT_DIR EMBED_DIR
"""
from __future__ import annotations

import sys
import time


def main() -> None:
    chat, embed = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from bench.common import torch_threads

    t1 = time.perf_counter()
    torch.set_num_threads(torch_threads())
    AutoTokenizer.from_pretrained(chat)
    AutoModelForCausalLM.from_pretrained(chat, dtype=torch.bfloat16).eval()
    t2 = time.perf_counter()
    AutoTokenizer.from_pretrained(embed)
    AutoModel.from_pretrained(embed).eval()
    t3 = time.perf_counter()
    print((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)


if __name__ == "__main__":
    main()
