"""Cancel on disconnect, end to end, for every job route, streamed and not: when a balancer gives up
on a board and closes the connection, a waiting job leaves the queue and a running one stops at once
(as the daemon's own status shows), so the board is free for the request the balancer re-sent."""
from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
from test_faults import HI, connect, slow_chat, wait_for
from test_multiboard import until

from daemon_proc import DaemonProc

SLOW = {"model": "syn:slow", "options": {"num_predict": 100_000}, "max_tokens": 100_000}
GENERATION = [  # (path, body): every generating route, streamed and not
    (path, body | {"stream": stream})
    for path, body in (("/api/chat", {"messages": HI}), ("/api/generate", {"prompt": "go"}),
                       ("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "go"}))
    for stream in (True, False)
]
EMBEDDING = [("/api/embed", {"model": "syn:embed", "input": ["a", "b"]}),
             ("/api/embeddings", {"model": "syn:embed", "prompt": "a"}),
             ("/v1/embeddings", {"model": "syn:embed", "input": ["a", "b"]})]


def open_request(d: DaemonProc, path: str, body: dict[str, Any]) -> socket.socket:
    raw = orjson.dumps(body)
    s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=30)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (path.encode(), len(raw), raw))
    return s


def queue(d: DaemonProc) -> list[dict[str, Any]]:
    with connect(d) as c:
        return c.call("status")["queue"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("path,body", GENERATION + EMBEDDING, ids=lambda v: v if isinstance(v, str) else
                         ("stream" if v.get("stream") else "whole"))
def test_a_waiting_job_leaves_the_queue_when_its_client_hangs_up(syn: DaemonProc, path: str, body: dict[str, Any]) -> None:
    with connect(syn) as c:
        slow_chat(c, "blocker")
        wait_for(c, "blocker", "token")
        s = open_request(syn, path, SLOW | body if "embed" not in path else body)
        until(lambda: len(queue(syn)) == 2, f"{path} queued")
        s.close()
        until(lambda: len(queue(syn)) == 1, f"{path}'s job left the queue")
        c.call("cancel", target="blocker")
        until(lambda: not queue(syn), "the blocker ended")


@pytest.mark.parametrize("path,body", GENERATION, ids=lambda v: v if isinstance(v, str) else
                         ("stream" if v.get("stream") else "whole"))
def test_a_running_job_stops_when_its_client_hangs_up(syn: DaemonProc, path: str, body: dict[str, Any]) -> None:
    s = open_request(syn, path, SLOW | body)
    until(lambda: any(j["state"] == "answering" for j in queue(syn)), f"{path} is generating")
    job = queue(syn)[0]["id"]
    s.close()
    until(lambda: not queue(syn), f"{path}'s running job stopped")  # it would run for 5,000 s otherwise
    with connect(syn) as c:
        outcome = next(j["outcome"] for j in c.call("status")["recent"] if j["id"] == job)
    assert outcome == "cancelled"
