"""6. Start-up and footprint, each next to a baseline from the same run.

- `rk --help` wall time ÷ `python -c pass` (the interpreter's own floor).
- daemon start-to-ready (spawn until its Unix socket accepts) ÷ the FastAPI + uvicorn baseline app
  to ready on a Unix socket, polled the same way.
- model load (`load_ms` of a `load` job: smollm2 straight from its GGUF on llama.cpp, MiniLM on
  transformers) ÷ a fresh Python loading the same files with llama-cpp-python and transformers
  (bench/load_baseline.py).
- idle RSS of the daemon and its warmed runner process ÷ the idle baseline app.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.b_multiturn import CHAT_MODEL
from bench.common import MODELS, REPO, Context, Row, baseline_app, daemon, daemon_env, median, rk_cmd, rss_mb, wait_connectable

EMBED_MODEL = "all-minilm:l6-v2"


def wall_ms(cmd: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        out.append((time.perf_counter() - t0) * 1000)
    return median(out)


def daemon_ready_ms(tmp: Path) -> tuple[float, float]:
    """(ms until the socket accepts, idle RSS MB of daemon + warmed runner) of one `rk serve`."""
    sock = tmp / "rk.sock"
    env = dict(os.environ) | daemon_env() | {"RK_SOCKET": str(sock), "RK_MODELS": str(MODELS), "RK_BUNDLED": "1"}
    log = open(tmp / "serve.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([*rk_cmd(), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_connectable(sock, proc=proc)
        ready = (time.perf_counter() - t0) * 1000
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)  # the runner process is started right after ready
        time.sleep(1.0)  # let it finish importing and settle
        return ready, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def baseline_ready_ms(tmp: Path) -> tuple[float, float]:
    sock = tmp / "base.sock"
    t0 = time.perf_counter()
    with baseline_app(tmp, uds=sock) as proc:
        ready = (time.perf_counter() - t0) * 1000
        time.sleep(1.0)
        return ready, rss_mb(proc.pid)


def run(ctx: Context) -> list[Row]:
    reps = ctx.n(5, 2)
    rows: list[Row] = []
    help_ms = wall_ms([*rk_cmd(), "--help"], reps)
    pass_ms = wall_ms([sys.executable, "-c", "pass"], reps)
    rows.append(Row("6 start-up", "rk --help", help_ms, pass_ms, "ms", "python -c pass"))
    tmp = ctx.tmp / "startup"
    tmp.mkdir()
    rk_runs = [daemon_ready_ms(tmp) for _ in range(ctx.n(3, 1))]
    base_runs = [baseline_ready_ms(tmp) for _ in range(ctx.n(3, 1))]
    rows.append(Row("6 start-up", "daemon start to ready", median([r[0] for r in rk_runs]),
                    median([b[0] for b in base_runs]), "ms", "FastAPI+uvicorn app to ready (Unix socket)"))
    rows.append(Row("6 start-up", "idle RSS, daemon + runner", median([r[1] for r in rk_runs]),
                    median([b[1] for b in base_runs]), "MB", "idle FastAPI+uvicorn app"))
    from rk.daemon.store.models import bundled_manifests

    files = {m.name: m for m in bundled_manifests(MODELS)}
    with daemon(ctx.tmp / "startup-load", models_dir=MODELS, bundled=True) as d, d.client(timeout=600) as c:
        loads = {name: float(c.call("load", model=name)["stats"]["load_ms"]) for name in (CHAT_MODEL, EMBED_MODEL)}
    out = subprocess.run([sys.executable, "-m", "bench.load_baseline", str(files[CHAT_MODEL].path("gguf")),
                          str(files[EMBED_MODEL].path("weights"))], cwd=REPO, check=True, capture_output=True, text=True)
    llama_import, chat_ms, torch_import, embed_ms = map(float, out.stdout.strip().splitlines()[-1].split())
    rows.append(Row("6 start-up", f"cached load {CHAT_MODEL}", loads[CHAT_MODEL], llama_import + chat_ms, "ms",
                    "fresh python: import llama_cpp + Llama(gguf)",
                    note="rk's runner imports llama_cpp while idle; the baseline's figure includes it"))
    rows.append(Row("6 start-up", f"cached load {EMBED_MODEL}", loads[EMBED_MODEL], torch_import + embed_ms, "ms",
                    "import torch + from_pretrained, same process", note="both include importing torch"))
    ctx.extra["startup"] = {"rk_ready_rss": rk_runs, "baseline_ready_rss": base_runs, "load_ms": loads}
    return rows
