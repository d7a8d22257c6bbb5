"""A real HAProxy (the shipped deploy/haproxy/haproxy.cfg) in front of three real rk daemons on loopback.

Properties, not timings: each board runs at most one balancer job at a time (the queue stays in
HAProxy), a model goes only to the boards the map names, a SIGKILLed board loses no non-streamed
request, and a board with an outside backlog gets no new job while it lasts. The makespan figures
against an ideal central queue come from `python -m bench --only multiboard`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from haproxy_cluster import BOARDS, Cluster, chat, haproxy_missing
from test_faults import HI, connect, slow_chat, wait_for
from test_multiboard import until

pytestmark = pytest.mark.skipif(haproxy_missing() is not None, reason=haproxy_missing() or "")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as c:
        yield c


def post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every request at once, each on its own connection, as many independent clients would."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: httpx.post(url + "/api/chat", json=b, timeout=300), bodies))


def test_one_job_per_board_at_a_time_and_models_only_where_mapped(cluster: Cluster) -> None:
    bodies = [chat(4 + 3 * (i % 5)) for i in range(12)] + [chat(2, model="syn:chat") for _ in range(3)]
    replies = post_all(cluster.url, bodies)
    assert [r.status_code for r in replies] == [200] * len(bodies), [r.text for r in replies if r.status_code != 200]
    served = [r.headers["X-Board"] for r in replies]
    assert set(served[:12]) == set(BOARDS)  # the central queue hands work to every board
    assert set(served[12:]) == {"rock5b"}  # the map: only rock5b holds the "big" model
    stats = cluster.servers()
    assert {b: int(s["smax"]) for b, s in stats.items()} == {b: 1 for b in BOARDS}  # never 2 at once on a board
    assert sum(int(s["stot"]) for s in stats.values()) == 12
    r = httpx.post(cluster.url + "/api/chat", json=chat(2, model="nope:1b"), timeout=30)
    assert r.status_code == 404 and "not served by any board" in r.text


def test_sigkilled_board_loses_no_non_streamed_request(cluster: Cluster) -> None:
    victim = 1
    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(httpx.post, cluster.url + "/api/chat", json=chat(20), timeout=300) for _ in range(9)]
        with connect(cluster.boards[victim]) as c:
            until(lambda: any(j["state"] == "answering" for j in c.call("status")["queue"]),
                  "the victim is generating a balancer's job")
        cluster.kill(victim)
        replies = [f.result() for f in futures]
    assert [r.status_code for r in replies] == [200] * 9, [r.text for r in replies if r.status_code != 200]
    assert all(r.json()["done"] and r.json()["eval_count"] == 20 for r in replies)
    assert BOARDS[victim] not in {r.headers["X-Board"] for r in replies}  # its job was re-sent elsewhere


def test_backlogged_board_gets_no_new_jobs_while_the_backlog_lasts(cluster: Cluster) -> None:
    board = cluster.boards[0]
    with connect(board) as c:
        slow_chat(c, "outside-1")  # runs until cancelled
        wait_for(c, "outside-1", "token")
        slow_chat(c, "outside-2")
        wait_for(c, "outside-2", "queued")
        cluster.wait_servers_of(BOARDS[0], "DRAIN")
        replies = post_all(cluster.url, [chat(4) for _ in range(8)])
        assert [r.status_code for r in replies] == [200] * 8
        assert BOARDS[0] not in {r.headers["X-Board"] for r in replies}
        snap = c.call("status")
        assert [j["source"] for j in snap["queue"]] == ["cli", "cli"]  # still its own backlog, nothing else
        assert all(j["source"] == "cli" for j in snap["recent"])
        for rid in ("outside-1", "outside-2"):
            c.call("cancel", target=rid)
    cluster.wait_servers_of(BOARDS[0], "UP")  # the backlog is gone: the agent says ready again
    assert httpx.post(cluster.url + "/api/chat", json={"model": "syn:slow", "messages": HI, "stream": False,
                                                       "options": {"num_predict": 2}}, timeout=60).status_code == 200
