"""Baseline for cached model load: a fresh Python loading the same models with their plain libraries.

It mirrors the runner: import llama_cpp and load the chat GGUF (same context and threads), then import
torch + transformers and load the embedding model. Prints four figures in milliseconds: llama_cpp
import, chat load, torch/transformers import, embed load, so each pair matches one of the runner's
`load_ms` (each backend's first model pays for its imports).
Usage: python -m bench.load_baseline CHAT_GGUF EMBED_DIR
"""
from __future__ import annotations

import sys
import time


def main() -> None:
    chat, embed = sys.argv[1], sys.argv[2]
    from bench.common import cpu_threads, torch_threads

    threads = cpu_threads()
    t0 = time.perf_counter()
    import llama_cpp

    from rk.daemon.backends.llamacpp import DEFAULT_CTX

    t1 = time.perf_counter()
    llama_cpp.Llama(model_path=chat, n_ctx=DEFAULT_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    t2 = time.perf_counter()
    import torch
    from transformers import AutoModel, AutoTokenizer

    t3 = time.perf_counter()
    torch.set_num_threads(torch_threads())
    AutoTokenizer.from_pretrained(embed)
    AutoModel.from_pretrained(embed).eval()
    t4 = time.perf_counter()
    print((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, (t4 - t3) * 1000)


if __name__ == "__main__":
    main()
