"""Many boards, one endpoint: a real HAProxy (deploy/haproxy/haproxy.cfg) in front of three real rk
daemons on loopback, with `syn:slow` (20 tokens/s) standing in for a slow NPU.

For the shipped config (leastconn, maxconn 1, agent-check) and for a naive `roundrobin` one:
* makespan of mixed jobs submitted at once ÷ the makespan of an ideal central FIFO queue over three
  boards (list scheduling of the same jobs in the same order, at 20 tokens/s, no overheads);
* requests lost (not 200) when one board is SIGKILLed while it generates;
* jobs the balancer sends to a board that has an outside backlog (clients that bypass the balancer).
"""
from __future__ import annotations

import heapq
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from haproxy_cluster import BOARDS, Cluster, chat

from bench.common import Context, Row

RATE = 20.0  # syn:slow's tokens per second


def ideal_fifo(durations: list[float], boards: int = len(BOARDS)) -> float:
    """Makespan of one FIFO queue feeding `boards` machines, each taking the next job when free."""
    free = [0.0] * boards
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def post_all(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response | None]:
    def one(b: dict[str, object]) -> httpx.Response | None:
        try:
            return httpx.post(url + "/api/chat", json=b, timeout=600)
        except httpx.HTTPError:
            return None
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def makespan(ctx: Context, policy: str, tokens: list[int]) -> float:
    with Cluster(ctx.tmp / f"mb-make-{policy}", policy) as c:
        t0 = time.perf_counter()
        replies = post_all(c.url, [chat(n) for n in tokens])
        took = time.perf_counter() - t0
    assert all(r is not None and r.status_code == 200 for r in replies), "a request failed"
    return took / ideal_fifo([n / RATE for n in tokens])


def lost_after_kill(ctx: Context, policy: str, jobs: int) -> int:
    with Cluster(ctx.tmp / f"mb-kill-{policy}", policy) as c:
        with ThreadPoolExecutor(jobs) as pool:
            futures = [pool.submit(post_all, c.url, [chat(20)]) for _ in range(jobs)]
            with c.boards[1].client() as line:
                while not any(j["state"] == "answering" for j in line.call("status")["queue"]):
                    time.sleep(0.01)
            c.kill(1)
            replies = [f.result()[0] for f in futures]
    return sum(1 for r in replies if r is None or r.status_code != 200)


def sent_to_backlogged(ctx: Context, policy: str, jobs: int) -> int:
    with Cluster(ctx.tmp / f"mb-backlog-{policy}", policy) as c:
        with c.boards[0].client() as line:
            for i in range(2):  # 10 s of outside work on opi5-a
                line.send("chat", rid=f"outside-{i}", model="syn:slow", messages=[{"role": "user", "content": "x"}],
                          options={"max_tokens": 100})
            while line.call("status")["depth"] < 1:
                time.sleep(0.01)
            if policy == "central":
                c.wait_servers_of(BOARDS[0], "DRAIN")
            replies = post_all(c.url, [chat(8) for _ in range(jobs)])
            for i in range(2):
                line.send("cancel", target=f"outside-{i}")
    return sum(1 for r in replies if r is not None and r.headers.get("X-Board") == BOARDS[0])


def run(ctx: Context) -> list[Row]:
    if shutil.which("haproxy") is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    rng = random.Random(2)
    tokens = [rng.randint(4, 60) for _ in range(ctx.n(30, 12))]  # 0.2-3 s jobs
    jobs = ctx.n(15, 9)
    figures: dict[str, dict[str, float]] = {}
    for policy in ("central", "roundrobin"):
        figures[policy] = {"makespan_ratio": makespan(ctx, policy, tokens),
                           "lost_after_kill": lost_after_kill(ctx, policy, jobs),
                           "sent_to_backlogged": sent_to_backlogged(ctx, policy, jobs)}
    ctx.extra["multiboard"] = figures | {"tokens": tokens, "jobs": jobs}
    c, r = figures["central"], figures["roundrobin"]
    name = "multiboard"
    return [
        Row(name, "makespan ÷ ideal central FIFO", c["makespan_ratio"], r["makespan_ratio"], "×",
            "roundrobin", ratio=None, target="≤ 1.10", note=f"{len(tokens)} mixed jobs, 3 boards"),
        Row(name, "requests lost, a board SIGKILLed", c["lost_after_kill"], r["lost_after_kill"], "of " + str(jobs),
            "roundrobin", ratio=None, target="0", note="non-streamed"),
        Row(name, "jobs sent to a backlogged board", c["sent_to_backlogged"], r["sent_to_backlogged"],
            "of " + str(jobs), "roundrobin", ratio=None, target="0"),
    ]
