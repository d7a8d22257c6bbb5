"""3. Accelerator idle gap: from the end of one job's backend call to the start of the next one's,
with 100 one-token chat jobs queued at once (target p99 < 1 ms).

Measured from the backend's side: bench/runner_trace/sitecustomize.py timestamps every backend call
inside the runner process (one monotonic clock, no cross-process skew). The gap therefore holds all
the work between two jobs: the result crossing the pipe, the daemon finishing the job (events to its
client, positions pushed to the 99 waiting), taking the next job, and its command crossing back.
The baseline is the floor of that design: a bare JSON-lines ping-pong between two Python processes
over pipes (bench/pipe_echo.py), the same two crossings with nothing else. A second series keeps
only 2 jobs in flight: what it does not share with the first is the cost of a long queue (the
position updates pushed to every waiting job after each one).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson

from bench.common import BENCH, Context, Row, chat_line, pct, summary, synthetic_daemon, timed

JOBS = 100
SHORT_TOKENS = 16


def pipe_floor(n: int) -> list[float]:
    """Round trips (ms) of one JSON line to a child process over pipes and back."""
    p = subprocess.Popen([sys.executable, "-m", "bench.pipe_echo"], cwd=BENCH.parent,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    msg = orjson.dumps({"op": "generate", "seq": 1, "model": "bench:tiny", "req": chat_line("bench:tiny", "hi", 1)}) + b"\n"

    def once() -> None:
        p.stdin.write(msg)  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        p.stdout.readline()  # type: ignore[union-attr]

    timed(once, 50)
    out = timed(once, n)
    p.stdin.close()
    p.wait()
    return out


def one_round(d, trace: str, in_flight: int = JOBS, tokens: int = 1) -> list[float]:  # type: ignore[no-untyped-def]
    """Run JOBS chats of `tokens` tokens on one connection, `in_flight` at a time (JOBS = all queued at
    once); the gaps (ms) between their backend calls. One-token jobs on `bench:tiny` take no backend
    time at all, so they measure the daemon's per-job cost; 16 tokens on `bench:stream` (2,000 tokens/s)
    are 8 ms jobs, the shortest a real accelerator runs."""
    open(trace, "w").close()
    model = "bench:tiny" if tokens == 1 else "bench:stream"
    with d.client(timeout=120) as c:
        pending = {c.send("chat", **chat_line(model, "hello there", tokens)) for _ in range(in_flight)}
        sent = in_flight
        while pending:
            ev = c.read()
            if ev.get("ev") in ("done", "error"):
                assert ev["ev"] == "done", ev
                pending.discard(ev["id"])
                if sent < JOBS:
                    pending.add(c.send("chat", **chat_line(model, "hello there", tokens)))
                    sent += 1
    time.sleep(0.05)
    with open(trace) as f:
        calls = sorted(tuple(map(int, line.split())) for line in f if line.strip())
    if len(calls) != JOBS:
        raise RuntimeError(f"the runner trace holds {len(calls)} backend calls, expected {JOBS} "
                           "(is bench/runner_trace/sitecustomize.py still hooking rk.daemon.backends.load_model?)")
    return [(calls[i + 1][0] - calls[i][1]) / 1e6 for i in range(len(calls) - 1)]


def run(ctx: Context) -> list[Row]:
    rounds = ctx.n(5, 2)
    trace = str(ctx.tmp / "runner-trace.txt")
    env = {"RK_BENCH_TRACE": trace,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH / "runner_trace"), os.environ.get("PYTHONPATH")]))}
    gaps: list[float] = []
    short: list[float] = []
    shallow: list[float] = []
    with synthetic_daemon(ctx, "idle_gap", env=env) as d:
        one_round(d, trace)  # warm: models loaded, code paths hot
        one_round(d, trace, tokens=SHORT_TOKENS)
        for _ in range(rounds):  # alternate, so noise hits all alike
            short += one_round(d, trace, tokens=SHORT_TOKENS)
            gaps += one_round(d, trace)
            shallow += one_round(d, trace, in_flight=2)
    floor = pipe_floor(len(gaps))
    ctx.extra["idle_gap"] = {"jobs_per_round": JOBS, "rounds": rounds, "gap_ms": summary(gaps),
                             "gap_ms_8ms_jobs": summary(short),
                             "gap_ms_two_in_flight": summary(shallow), "pipe_round_trip_ms": summary(floor)}
    base = "JSON-lines pipe ping-pong between two processes"
    return [
        Row("3 idle gap", f"p50 gap, {JOBS} queued 8 ms jobs", pct(short, 50), pct(floor, 50), "ms", base),
        Row("3 idle gap", f"p99 gap, {JOBS} queued 8 ms jobs", pct(short, 99), pct(floor, 99), "ms", base,
            target="p99 < 1 ms"),
        Row("3 idle gap", f"p50 gap, {JOBS} queued 0 ms jobs", pct(gaps, 50), pct(floor, 50), "ms", base,
            note="no backend time at all: the daemon's per-job cost"),
        Row("3 idle gap", f"p99 gap, {JOBS} queued 0 ms jobs", pct(gaps, 99), pct(floor, 99), "ms", base),
        Row("3 idle gap", "max gap", max(gaps), max(floor), "ms", base),
        Row("3 idle gap", "p50 gap, 2 jobs in flight", pct(shallow, 50), pct(floor, 50), "ms", base,
            note="queue depth ~1: the per-job fixed cost"),
        Row("3 idle gap", "p99 gap, 2 jobs in flight", pct(shallow, 99), pct(floor, 99), "ms", base),
    ]
