"""What a balancer in front of several boards reads from one board: the HAProxy agent-check port,
`/health`, the open `/metrics`, the busy statuses (503/429 + Retry-After) and the per-client cap.

HAProxy itself in front of three daemons: tests/test_haproxy.py.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from test_faults import HI, connect, final, slow_chat, wait_for

from daemon_proc import DaemonProc, write_manifest

Factory = Callable[..., DaemonProc]
KEY = "board-key"


def agent_addr(d: DaemonProc) -> tuple[str, int]:
    """The agent port the daemon bound (it was given port 0 and reports the one it got)."""
    with connect(d) as c:
        host, _, port = c.call("status")["agent"].rpartition(":")
    return host, int(port)


def agent(d: DaemonProc, send: bytes | None = None) -> str:
    """One agent-check exchange as HAProxy makes it: connect, maybe `agent-send`, read one line, closed."""
    with socket.create_connection(agent_addr(d), timeout=10) as s:
        if send is not None:
            s.sendall(send)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data
    return data.decode().strip()


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_agent_replies_follow_queue_drain_and_failures(daemon_factory: Factory, tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_manifest(models, "syn:crashy", backend="synthetic", capabilities=["completion"], context_length=512,
                   params={"crash_on_load": True})
    d = daemon_factory(models_dir=models, extra_args=["--agent-port", "0"])
    assert agent(d) == "ready up 100%"
    assert agent(d, b"syn:slow\n") == "ready up 100%"
    assert agent(d, b"nope:1b\n") == "down#model nope:1b is not on this board"
    with connect(d) as c:
        slow_chat(c, "run")
        wait_for(c, "run", "token")
        assert agent(d) == "ready up 50%"  # one job ahead of a new one
        slow_chat(c, "waiting")
        wait_for(c, "waiting", "queued")
        assert agent(d) == "drain"  # a job waits here that the balancer did not send
        c.call("cancel", target="waiting")
        assert agent(d) == "ready up 50%"
        c.call("drain")
        assert agent(d) == "drain" and agent(d, b"syn:slow\n") == "drain"
        c.call("undrain")
        assert agent(d) == "ready up 50%"
        c.call("cancel", target="run")
        final(c, "run")
        for _ in range(3):
            final(c, c.send("chat", model="syn:crashy", messages=HI))
        assert agent(d, b"syn:crashy\n").startswith("down#model syn:crashy failed to load: ")
        assert agent(d, b"syn:slow\n") == "ready up 100%"  # the other models are still served


def test_a_balancers_own_waiting_job_does_not_drain_the_board(daemon_factory: Factory) -> None:
    """Jobs from the address that asks the agent port came through the balancer: when two of its backends
    share a board, one may wait here, and draining for it would strand the balancer's queue."""
    d = daemon_factory(tcp=True, extra_args=["--agent-port", "0"])
    assert agent(d) == "ready up 100%"  # the balancer (127.0.0.1) makes itself known
    body = {"model": "syn:slow", "messages": HI, "stream": False, "options": {"num_predict": 100_000}}
    with ThreadPoolExecutor(2) as pool, connect(d) as c:
        for _ in range(2):
            pool.submit(httpx.post, d.base_url + "/api/chat", json=body, timeout=60)
        until(lambda: c.call("status")["depth"] == 1, "the balancer's second job waits")
        assert agent(d) == "ready up 33%"  # two jobs ahead, no drain
        slow_chat(c, "outside")  # from the Unix socket: not the balancer
        wait_for(c, "outside", "queued")
        assert agent(d) == "drain"
        for j in c.call("status")["queue"]:
            c.call("cancel", target=j["id"])


def test_agent_says_drain_while_shutting_down(daemon_factory: Factory) -> None:
    d = daemon_factory(extra_args=["--agent-port", "0"], env={"RK_SHUTDOWN_GRACE": "30"})
    addr = agent_addr(d)
    with connect(d) as c:
        slow_chat(c, "run", max_tokens=1000)
        wait_for(c, "run", "token")
        d.proc.send_signal(15)

        def drained() -> bool:
            with socket.create_connection(addr, timeout=10) as s:
                return s.recv(100) == b"drain\n"
        until(drained, "the agent said drain during the grace period")
        c.sock.close()
    d.stop()


def test_agent_port_answers_many_checks_while_tokens_stream(daemon_factory: Factory) -> None:
    """Cheap and bounded: 200 checks during a streamed job each get their one line."""
    d = daemon_factory(extra_args=["--agent-port", "0"])
    with connect(d) as c:
        slow_chat(c, "run")
        wait_for(c, "run", "token")
        assert {agent(d, b"syn:slow\n") for _ in range(200)} == {"ready up 50%"}
        c.call("cancel", target="run")


def scrape(url: str, **kw: object) -> dict[str, float]:
    r = httpx.get(url, timeout=10, **kw)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return {f"{s.name}{s.labels or ''}": s.value for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_health_and_public_metrics_without_the_key(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, extra_args=["--metrics-public", "--metrics-compat", "vllm"], env={"RK_API_KEY": KEY})
    assert httpx.get(d.base_url + "/api/tags").status_code == 401  # the key still guards the API
    until(lambda: httpx.get(d.base_url + "/health").status_code == 200, "the runner started")  # 503 "starting" before
    r = httpx.get(d.base_url + "/health")
    assert r.json() == {"state": "ready", "queue_depth": 0, "running": 0, "predicted_wait_s": 0.0, "loaded": []}
    with connect(d) as c:
        slow_chat(c, "run", max_tokens=1000)
        wait_for(c, "run", "token")
        slow_chat(c, "waiting")
        wait_for(c, "waiting", "queued")
        m = scrape(d.base_url + "/metrics")  # no key
        health = httpx.get(d.base_url + "/health").json()
        for rid in ("waiting", "run"):
            c.call("cancel", target=rid)
    assert (m["rk_queue_depth"], m["rk_running_jobs"]) == (1, 1)
    assert (m["vllm:num_requests_waiting"], m["vllm:num_requests_running"]) == (1, 1)
    assert m["rk_predicted_wait_seconds"] == health["predicted_wait_s"] == 2.0  # 2 jobs x 1 s before any finished
    assert m["rk_model_loaded{'model': 'syn:slow'}"] == 1
    assert 0 < m["rk_kv_cache_usage_perc"] == m["vllm:kv_cache_usage_perc"] <= 1
    assert health["state"] == "ready" and health["loaded"] == ["syn:slow"] and health["queue_depth"] == 1


def test_metrics_keep_the_key_unless_public(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_API_KEY": KEY})
    assert httpx.get(d.base_url + "/metrics").status_code == 401
    assert "vllm:" not in httpx.get(d.base_url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    until(lambda: httpx.get(d.base_url + "/health").status_code == 200, "/health answered without the key")


def test_health_503_and_agent_down_while_the_runner_cannot_start(daemon_factory: Factory) -> None:
    """A runner that never gets ready in time (RK_STALL_TIMEOUT far below its start-up) is down."""
    d = daemon_factory(tcp=True, extra_args=["--agent-port", "0"], env={"RK_STALL_TIMEOUT": "0.01"})
    until(lambda: httpx.get(d.base_url + "/health").status_code == 503, "/health turned 503")
    body = httpx.get(d.base_url + "/health").json()
    assert body["state"] == "down" and "did not start in time" in body["reason"], body
    assert agent(d).startswith("down#runner: the runner process did not start in time")


def test_queue_full_429_with_retry_after(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_MAX_QUEUE": "1", "RK_QUEUE_FULL_STATUS": "429"})
    with connect(d) as c:
        slow_chat(c, "run")
        wait_for(c, "run", "token")
        slow_chat(c, "w1")
        wait_for(c, "w1", "queued")
        for path in ("/api/chat", "/v1/chat/completions"):
            r = httpx.post(d.base_url + path, json={"model": "syn:chat", "messages": HI, "stream": False}, timeout=10)
            assert r.status_code == 429 and r.headers["Retry-After"] == "2", (path, r.status_code, r.headers)
        for rid in ("run", "w1"):
            c.call("cancel", target=rid)


def test_one_client_at_its_cap_gets_429_while_another_is_served_in_order(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_CLIENT_MAX_JOBS": "1"})
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    slow = {"model": "syn:slow", "messages": HI, "stream": False, "options": {"num_predict": 4}}
    results: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=d.base_url, timeout=60) as h, connect(d) as c:
        def post(name: str, headers: dict[str, str]) -> None:
            results[name] = h.post("/api/chat", json=slow, headers=headers)

        first = threading.Thread(target=post, args=("alice1", alice))
        first.start()
        until(lambda: len(c.call("status")["queue"]) == 1, "alice's first job queued")
        second = threading.Thread(target=post, args=("bob1", bob))
        second.start()
        until(lambda: len(c.call("status")["queue"]) == 2, "bob's job queued")
        over = h.post("/api/chat", json=slow, headers=alice)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        assert "1 jobs waiting or running" in over.json()["error"] and "RK_CLIENT_MAX_JOBS" in over.json()["error"]
        queue = c.call("status")["queue"]
        assert queue[0]["client_id"].startswith("key:") and queue[0]["client_id"] != queue[1]["client_id"]
        assert "alice" not in str(queue)  # the key itself is never shown
        ps = subprocess.run([sys.executable, "-m", "rk", "--socket", str(d.socket), "ps"], capture_output=True,
                            text=True, timeout=30, env=dict(d.env, COLUMNS="200"))
        assert queue[1]["client_id"] in ps.stdout, ps.stdout
        first.join()
        second.join()
        recent = c.call("status")["recent"]
    assert results["alice1"].status_code == results["bob1"].status_code == 200
    ids = [j["id"] for j in reversed(recent) if j["outcome"] == "done"]
    assert ids == [queue[0]["id"], queue[1]["id"]]  # FIFO order of the admitted jobs is unchanged
