"""Soak (issue 15): 300 streaming chats and 50 embedding jobs over both protocols while the runner is
killed twice and ten clients never read. Every job ends exactly once, each connection's jobs start in
the order they were sent, and the daemon gives its memory and file descriptors back. Loopback only,
bounded in count and time."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson

from daemon_proc import DaemonProc, write_manifest

CHATS_LINE, CHATS_HTTP, EMBEDS, DEAF = 150, 150, 50, 10
ENDS = ("done", "runner_crashed")  # a job in flight when its runner is killed fails, and says so


def rss_mb(pid: int) -> float:
    return next(int(ln.split()[1]) / 1024 for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ln.startswith("VmRSS:"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def line_worker(d: DaemonProc, jobs: range, tag: str, out: dict[str, Any]) -> None:
    """Chats and embeds (every fourth job) sent at once on one connection; the order their `started` events arrive in."""
    with d.client(timeout=120) as c:
        rids = []
        for i in jobs:
            if i % 4 == 3:
                rids.append(c.send("embed", rid=f"e{tag}{i}", model="syn:embed", input=[f"text {i}", "more"]))
            else:
                rids.append(c.send("chat", rid=f"c{tag}{i}", model="syn:chat", messages=[{"role": "user",
                                                                                          "content": f"m {i} x"}]))
        finals: dict[str, str] = {}
        started: list[int] = []
        while len(finals) < len(rids):
            ev = c.read()
            if ev["ev"] == "started":
                started.append(int(ev["job"][1:]))
            elif ev["ev"] in ("done", "error"):
                assert ev["id"] not in finals, f"two final events for {ev['id']}"
                finals[ev["id"]] = ev.get("code", "done")
        out[tag] = (finals, started)


def http_chat(base: str, i: int) -> str:
    """One streamed chat over Ollama NDJSON or OpenAI SSE; its outcome."""
    with httpx.Client(base_url=base, timeout=120) as h:
        if i % 2:
            with h.stream("POST", "/api/chat", json={"model": "syn:chat", "messages": [{"role": "user",
                                                                                        "content": f"h {i}"}]}) as r:
                if r.status_code != 200:
                    return r.read().decode()
                last = [orjson.loads(ln) for ln in r.iter_lines() if ln][-1]
                return "done" if last.get("done") else ("runner_crashed" if "died" in last.get("error", "") else str(last))
        with h.stream("POST", "/v1/chat/completions", json={"model": "syn:chat", "stream": True,
                                                             "messages": [{"role": "user", "content": f"o {i}"}]}) as r:
            if r.status_code != 200:
                return r.read().decode()
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
            if lines[-1] == "data: [DONE]":
                return "done"
            return "runner_crashed" if "runner_crashed" in lines[-1] else lines[-1]


def deaf_client(d: DaemonProc) -> socket.socket:
    """Asks for an endless stream and never reads a byte."""
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(str(d.socket))
    s.sendall(orjson.dumps({"id": "deaf", "op": "chat", "model": "syn:flood",
                            "messages": [{"role": "user", "content": "go"}]}) + b"\n")
    return s


def test_soak(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True, env={"RK_SLOW_CLIENT_GRACE": "1", "RK_CLIENT_BACKLOG": "100"})
    write_manifest(d.models_dir, "syn:flood", backend="synthetic", capabilities=["completion"], context_length=512,
                   params={"tokens_per_s": 20000.0, "reply_tokens": 10_000_000})
    base = f"http://127.0.0.1:{d.tcp_port}"
    with d.client() as c:  # warm: the runner and both models are up, the allocator has settled
        for _ in range(20):
            c.call("chat", model="syn:chat", messages=[{"role": "user", "content": "warm"}])
            c.call("embed", model="syn:embed", input=["warm"])
    rss0, fds0 = rss_mb(d.proc.pid), fds(d.proc.pid)
    t0 = time.monotonic()

    deaf = [deaf_client(d) for _ in range(DEAF)]
    line_out: dict[str, Any] = {}
    killed: list[int] = []

    def killer() -> None:
        with d.client() as c:
            for _ in range(2):
                time.sleep(1.0)
                pid = c.call("status")["runner"]["pid"]
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    with ThreadPoolExecutor(max_workers=16) as pool:
        per = (CHATS_LINE + EMBEDS) // 4
        lines = [pool.submit(line_worker, d, range(k * per, (k + 1) * per), str(k), line_out) for k in range(4)]
        https = [pool.submit(http_chat, base, i) for i in range(CHATS_HTTP)]
        k = threading.Thread(target=killer)
        k.start()
        http_results = [f.result(timeout=170) for f in https]
        for f in lines:
            f.result(timeout=170)
        k.join()
    for s in deaf:
        s.close()

    assert len(killed) == 2
    assert all(r in ENDS for r in http_results), [r for r in http_results if r not in ENDS][:3]
    finals = {rid: code for fin, _ in line_out.values() for rid, code in fin.items()}
    assert len(finals) == CHATS_LINE + EMBEDS and all(code in ENDS for code in finals.values())
    for _, started in line_out.values():  # each connection's jobs started in the order they were sent
        assert started == sorted(started)
    with d.client() as c:
        for _ in range(100):
            st = c.call("status")
            if not st["queue"]:
                break
            time.sleep(0.1)
        totals = st["totals"]
    everything = CHATS_LINE + EMBEDS + CHATS_HTTP + DEAF + 40
    assert totals["accepted"] == everything
    assert totals.get("done", 0) + totals.get("errors", 0) + totals.get("cancelled", 0) == everything  # none lost
    # the deaf clients' endless jobs end as slow_client, or as runner_crashed when a kill hit one of them
    slow, crashed = totals.get("error:slow_client", 0), totals.get("error:runner_crashed", 0)
    assert slow >= DEAF - len(killed) and slow + crashed >= DEAF and totals["runner_restarts"] >= 2
    for _ in range(50):  # connections closing and buffers being freed take a moment
        if rss_mb(d.proc.pid) <= rss0 * 1.2 and fds(d.proc.pid) <= fds0 + 2:
            break
        time.sleep(0.2)
    assert rss_mb(d.proc.pid) <= rss0 * 1.2, (rss0, rss_mb(d.proc.pid))
    assert fds(d.proc.pid) <= fds0 + 2, (fds0, fds(d.proc.pid))
    assert time.monotonic() - t0 < 180
