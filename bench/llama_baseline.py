"""Baseline for first token and memory: a fresh Python that imports llama-cpp-python, loads a GGUF and decodes.

It does what the runner does for the bundled chat model and nothing else: same context size, threads,
chat template (the GGUF's, rendered by llama-cpp-python's Jinja formatter) and greedy decoding.
Prints `first` the moment the first token exists (the parent times spawn -> that line), then, after
N tokens, its resident memory in MB.
Usage: python -m bench.llama_baseline GGUF THREADS N
"""
from __future__ import annotations

import sys


def main() -> None:
    gguf, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from rk.daemon.backends.llamacpp import DEFAULT_CTX
    from rk.daemon.procinfo import rss_mb

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=DEFAULT_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    text = lambda t: llm.detokenize([t], special=True).decode()  # noqa: E731
    fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], text(llm.token_eos()), text(llm.token_bos()))
    prompt = fmt(messages=[{"role": "user", "content": "Say hello to the sea."}]).prompt
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    for i, tok in enumerate(llm.generate(ids, temp=0.0, repeat_penalty=1.0)):
        if i == 0:
            print("first", flush=True)
        if i + 1 >= n or llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
    print(f"{rss_mb():.1f}", flush=True)


if __name__ == "__main__":
    main()
