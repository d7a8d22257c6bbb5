"""7. Decode speed of the bundled chat model through the daemon ÷ llama-cpp-python in-process (issue 12's figure).

rk: a greedy 64-token line-protocol chat on smollm2:135m (the llamacpp backend); the backend's own
tokens/s (from `done`) and the tokens/s the client sees (first token to `done`). Baseline:
llama-cpp-python's `Llama.generate` loop in this process on the same GGUF, context size and thread
count, timed the same way (after the prefill, until the same number of tokens). Runs alternate so
noise hits both alike; prefix reuse is off so every run does the same work.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from bench.common import MODELS, Context, Row, cpu_threads, daemon

CHAT_MODEL = "smollm2:135m"
PROMPT = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
TOKENS = 64


def in_process_rate() -> Callable[[int], float]:
    """Load the GGUF here once; return a function that decodes n tokens greedily and gives tokens/s."""
    import llama_cpp

    from rk.daemon.backends.llamacpp import DEFAULT_CTX
    from rk.daemon.store.models import bundled_manifests

    manifest = next(m for m in bundled_manifests(MODELS) if m.name == CHAT_MODEL)
    threads = cpu_threads()
    llm = llama_cpp.Llama(model_path=str(manifest.path("gguf")), n_ctx=DEFAULT_CTX, n_threads=threads,
                          n_threads_batch=threads, chat_format="chat_template.default", verbose=False)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llm.token_eos(), llm.token_bos()
    text = lambda t: llm.detokenize([t], special=True).decode()  # noqa: E731
    # The GGUF's template rendered the way the backend does, so both sides decode from the same tokens.
    prompt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], text(eos), text(bos))(messages=PROMPT).prompt
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)

    def rate(n: int) -> float:
        llm.reset()
        gen = llm.generate(ids, temp=0.0, repeat_penalty=1.0)
        next(gen)  # prefill + first token
        t0 = time.perf_counter()
        for _ in range(n - 1):
            tok = next(gen)
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
                break
        took = time.perf_counter() - t0
        gen.close()
        return (n - 1) / took

    return rate


def daemon_rates(c: Any) -> tuple[float, float, int]:
    """(backend tokens/s from `done`, tokens/s the client saw from its first token to `done`, tokens)."""
    rid = c.send("chat", model=CHAT_MODEL, messages=PROMPT,
                 options={"temperature": 0, "max_tokens": TOKENS, "cache_prompt": False})
    first = None
    n = 0
    for ev in c.events(rid):
        if ev["ev"] == "token":
            n += 1
            first = first or time.perf_counter()
        elif ev["ev"] == "done":
            s = ev["stats"]
            client = (n - 1) / (time.perf_counter() - first) if first and n > 1 else 0.0
            return s["generate_tokens"] / (s["generate_ms"] / 1000), client, int(s["generate_tokens"])
    raise RuntimeError("no done event")


def run(ctx: Context) -> list[Row]:
    rounds = ctx.n(5, 3)
    local = in_process_rate()
    local(8)  # warm
    backend, client, baseline = [], [], []
    with daemon(ctx.tmp / "decode", models_dir=MODELS, bundled=True) as d, d.client(timeout=600) as c:
        _, _, n = daemon_rates(c)  # load and warm; n = tokens before EOS, so both sides decode the same count
        for _ in range(rounds):
            b, cl, _ = daemon_rates(c)
            backend.append(b)
            client.append(cl)
            baseline.append(local(n))
    ctx.extra["decode"] = {"tokens": n, "threads": cpu_threads(), "daemon_backend_tps": backend,
                           "daemon_client_tps": client, "in_process_tps": baseline}
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    base = f"llama-cpp-python in-process, same GGUF, {cpu_threads()} threads"
    return [
        Row("7 decode", f"{CHAT_MODEL} tokens/s, backend figure", med(backend), med(baseline), "tokens/s", base,
            target=">= 0.97"),
        Row("7 decode", f"{CHAT_MODEL} tokens/s seen by the client", med(client), med(baseline), "tokens/s", base,
            target=">= 0.97", note="through the runner pipe, daemon and socket"),
    ]
