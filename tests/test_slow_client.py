"""A client that never reads its stream cannot grow the daemon's memory without bound (issue 15, item 9):
its job is stopped with `slow_client` once it stays over the backlog for the grace period, and
everyone else is served meanwhile."""
from __future__ import annotations

import socket
import time
from typing import Callable

import orjson

from daemon_proc import DaemonProc, write_manifest

FLOOD = {"backend": "synthetic", "capabilities": ["completion"], "context_length": 4096,
         "params": {"tokens_per_s": 20000.0, "reply_tokens": 10_000_000}}


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for_slow_client(d: DaemonProc, n: int) -> dict:
    with d.client() as c:
        for _ in range(600):
            status = c.call("status")
            if status["totals"].get("error:slow_client", 0) >= n:
                return status
            time.sleep(0.1)
    raise AssertionError("no job was stopped for its slow client")


def test_clients_that_never_read_are_stopped_and_others_are_served(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True, env={"RK_SLOW_CLIENT_GRACE": "1", "RK_CLIENT_BACKLOG": "200"})
    write_manifest(d.models_dir, "syn:flood", **FLOOD)
    line = socket.socket(socket.AF_UNIX)
    line.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    line.connect(str(d.socket))
    line.sendall(orjson.dumps({"id": "x", "op": "chat", "model": "syn:flood",
                               "messages": [{"role": "user", "content": "go"}]}) + b"\n")
    http = socket.create_connection(("127.0.0.1", d.tcp_port))
    http.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = orjson.dumps({"model": "syn:flood", "messages": [{"role": "user", "content": "go"}]})
    http.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        status = wait_for_slow_client(d, 2)  # neither client read a byte
        assert not any(j["model"] == "syn:flood" for j in status["queue"])
        with d.client() as c:
            assert c.call("chat", model="syn:chat", messages=[{"role": "user", "content": "still here"}])["ev"] == "done"
        assert rss_mb(d.proc.pid) < 200  # bounded by backlog x grace, not by how long the client stays
    finally:
        line.close()
        http.close()
