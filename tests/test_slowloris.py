"""A slowloris client (one header byte per second) is cut off by RK_HEADER_TIMEOUT; others are served meanwhile."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import httpx

from daemon_proc import DaemonProc

HEADER_TIMEOUT_S = 2.0


def dribble(port: int, result: dict[str, float]) -> None:
    """Send a request head one byte a second until the daemon closes the connection; record when it did."""
    head = b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 64 + b"\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    t0 = time.monotonic()
    try:
        for b in head:
            s.sendall(bytes([b]))
            time.sleep(1.0)
            if time.monotonic() - t0 > 12:
                break
    except OSError:  # reset or broken pipe: the daemon hung up
        result["cut_off"] = 1.0
    try:
        s.settimeout(2)
        data = s.recv(4096)  # b"" (closed) or an error reply; never a 200 for the dribbled request
        result["reply"] = float(b"200 OK" in data)
    except OSError:
        result["reply"] = 0.0
    result["closed_after"] = time.monotonic() - t0
    s.close()


def test_slowloris_is_cut_off_while_others_are_served(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True, env={"RK_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S)})
    result: dict[str, float] = {"cut_off": 0.0}
    t = threading.Thread(target=dribble, args=(d.tcp_port, result))
    t.start()
    served = 0
    with httpx.Client(base_url=d.base_url, timeout=5) as h:
        while t.is_alive():
            r = h.post("/api/chat", json={"model": "syn:chat", "messages": [{"role": "user", "content": "a b"}],
                                          "stream": False})
            assert r.status_code == 200, r.text
            served += 1
            time.sleep(0.1)
    t.join()
    assert result["reply"] == 0.0, "the dribbled request was answered"
    # cut off by the daemon (not by the dribbler's own 12 s cap), and not before the header timeout
    assert result["cut_off"] == 1.0 and result["closed_after"] >= HEADER_TIMEOUT_S - 0.5, result
    assert served >= 5, f"only {served} other requests were served meanwhile"
