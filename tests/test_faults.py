"""Faults against a real daemon: runner crashes and hangs, models that crash on load, full queues,
timeouts, clients that vanish, and model names that try to leave the models directory.

Every test ends with the accounting rule: each accepted job ended exactly once, as done, cancelled or
an error, whatever happened on the way.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from rk.client import Client

from daemon_proc import DaemonProc, write_manifest

Factory = Callable[..., DaemonProc]
HI = [{"role": "user", "content": "one two three"}]
FINAL = ("done", "error")


def connect(d: DaemonProc, timeout: float = 30.0) -> Client:
    """A line-protocol client whose reads fail after `timeout` instead of hanging the suite."""
    c = d.client()
    c.sock.settimeout(timeout)
    return c


def final(c: Client, rid: str) -> dict[str, Any]:
    """The one final event (done or error) of a request; errors are returned, not raised."""
    while True:
        ev = c._next_for(rid)
        if ev["ev"] in FINAL:
            return ev


def wait_for(c: Client, rid: str, kind: str) -> dict[str, Any]:
    """Events of `rid` up to the first of `kind`; fails if the job ends first."""
    while True:
        ev = c._next_for(rid)
        if ev["ev"] == kind:
            return ev
        assert ev["ev"] not in FINAL, f"{rid} ended before {kind}: {ev}"


def assert_accounting(d: DaemonProc) -> dict[str, int]:
    """accepted == done + cancelled + errors, once nothing is left waiting or running."""
    deadline = time.monotonic() + 10
    while True:
        with connect(d) as c:
            snap = c.call("status")
        t = snap["totals"]
        if not snap["queue"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not snap["queue"], snap["queue"]
    assert t.get("accepted", 0) == t.get("done", 0) + t.get("cancelled", 0) + t.get("errors", 0), t
    assert sum(v for k, v in t.items() if k.startswith("error:") and k != "error:cancelled") == t.get("errors", 0), t
    return t


def slow_chat(c: Client, rid: str, max_tokens: int = 100_000) -> str:
    return c.send("chat", rid=rid, model="syn:slow", messages=HI, options={"max_tokens": max_tokens})


# ---- runner faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("marker,code,env", [
    ("[[crash]]", "runner_crashed", {}),
    ("[[hang]]", "timeout", {"RK_STALL_TIMEOUT": "2"}),
], ids=["crash", "hang"])
def test_runner_fault_fails_only_the_job_in_flight(daemon_factory: Factory, marker: str, code: str,
                                                    env: dict[str, str]) -> None:
    """The faulty job fails with its code; the 10 jobs queued behind it all complete on a new runner."""
    d = daemon_factory(env=env)
    with connect(d) as c:
        c.send("chat", rid="bad", model="syn:chat", messages=[{"role": "user", "content": f"boom {marker}"}])
        behind = [c.send("chat", rid=f"ok{i}", model="syn:chat", messages=HI) for i in range(10)]
        assert wait_for(c, "ok9", "queued")["position"] == 11
        ev = final(c, "bad")
        assert (ev["ev"], ev.get("code")) == ("error", code), ev
        assert [final(c, rid)["ev"] for rid in behind] == ["done"] * 10
        snap = c.call("status")
    assert snap["totals"]["runner_restarts"] >= 1
    t = assert_accounting(d)
    assert (t["done"], t[f"error:{code}"]) == (10, 1)


def test_model_crashing_on_every_load_is_marked_failed(daemon_factory: Factory, tmp_path: Path) -> None:
    """Three crashed loads mark the model failed with the reason; no endless restarts; others still run."""
    models = tmp_path / "models"
    write_manifest(models, "syn:crashy", backend="synthetic", capabilities=["completion"], context_length=512,
                   params={"crash_on_load": True})
    d = daemon_factory(models_dir=models)
    with connect(d) as c:
        codes = [final(c, c.send("chat", model="syn:crashy", messages=HI)).get("code") for _ in range(4)]
        assert codes == ["runner_crashed"] * 3 + ["model_failed"]
        info = {m["name"]: m for m in c.call("models")["models"]}
        assert "died" in info["syn:crashy"]["failed"], info["syn:crashy"]
        assert final(c, c.send("chat", model="syn:chat", messages=HI))["ev"] == "done"
        restarts = c.call("status")["totals"]["runner_restarts"]
        assert restarts == 3  # one per crashed load; the fourth request never reached the runner
        time.sleep(0.5)
        assert c.call("status")["totals"]["runner_restarts"] == restarts  # no loop of reloads behind our back
    assert_accounting(d)


def test_cancel_while_the_model_loads(daemon_factory: Factory) -> None:
    """A job cancelled (or whose client hangs up) during its model's load must still end as cancelled."""
    d = daemon_factory()
    with connect(d, timeout=4) as c:
        slow_chat(c, "run")
        wait_for(c, "run", "loading")
        c.call("cancel", target="run")
        assert final(c, "run").get("code") == "cancelled"


# ---- limits --------------------------------------------------------------------------------------


def test_queue_full_on_every_protocol(daemon_factory: Factory) -> None:
    """RK_MAX_QUEUE=2: the next job gets queue_full on the line protocol and 503 + Retry-After over HTTP."""
    d = daemon_factory(tcp=True, env={"RK_MAX_QUEUE": "2"})
    with connect(d) as c:
        slow_chat(c, "run")
        wait_for(c, "run", "token")  # loaded and running (a cancel during the load is lost: see below)
        slow_chat(c, "w1")
        slow_chat(c, "w2")
        assert wait_for(c, "w2", "queued")["position"] == 3
        ev = final(c, slow_chat(c, "over"))
        assert ev.get("code") == "queue_full", ev
        body = {"model": "syn:chat", "messages": HI, "stream": False}
        for path, code_of in (("/api/chat", lambda j: j["error"]), ("/v1/chat/completions", lambda j: j["error"]["code"])):
            r = httpx.post(d.base_url + path, json=body, timeout=10)
            assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), (path, r.status_code, r.headers)
            assert "queue" in str(code_of(r.json())), r.text
        for rid in ("run", "w1", "w2"):
            c.call("cancel", target=rid)
            assert final(c, rid).get("code") == "cancelled", rid
    assert assert_accounting(d)["cancelled"] == 3


def test_queue_and_job_timeouts(daemon_factory: Factory) -> None:
    """RK_JOB_TIMEOUT ends a running job with `timeout`; RK_QUEUE_TIMEOUT ends a waiting one the same way."""
    d = daemon_factory(env={"RK_JOB_TIMEOUT": "3", "RK_QUEUE_TIMEOUT": "1"})
    with connect(d) as c:
        slow_chat(c, "long")
        wait_for(c, "long", "started")
        t0 = time.monotonic()
        c.send("chat", rid="waits", model="syn:chat", messages=HI)
        ev = final(c, "waits")  # arrives first: its 1 s limit ends before the running job's 3 s one
        assert ev.get("code") == "timeout" and time.monotonic() - t0 >= 1.0, ev  # never before its limit
        assert final(c, "long").get("code") == "timeout"
        assert final(c, c.send("chat", model="syn:chat", messages=HI))["ev"] == "done"
    assert assert_accounting(d)["error:timeout"] == 2


# ---- disconnects ---------------------------------------------------------------------------------


def started_within(c: Client, rid: str, since: float) -> float:
    wait_for(c, rid, "started")
    return time.monotonic() - since


def test_line_client_gone_cancels_its_jobs(daemon_factory: Factory) -> None:
    """A waiting job of a closed connection leaves the queue; a streaming one is aborted and the next starts."""
    d = daemon_factory()
    with connect(d) as watcher:
        gone = connect(d)
        slow_chat(gone, "stream")
        wait_for(gone, "stream", "token")
        slow_chat(gone, "waiting")
        wait_for(gone, "waiting", "queued")
        watcher.send("chat", rid="next", model="syn:chat", messages=HI)
        assert wait_for(watcher, "next", "queued")["position"] == 3
        t0 = time.monotonic()
        gone.close()
        assert started_within(watcher, "next", t0) < 5.0  # the abandoned stream would never have ended
        assert final(watcher, "next")["ev"] == "done"
    t = assert_accounting(d)
    assert (t["cancelled"], t["done"]) == (2, 1)


def raw_http(d: DaemonProc, body: bytes, path: str = "/api/chat") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=10)
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


def test_http_client_gone_cancels_its_jobs(daemon_factory: Factory) -> None:
    """Over HTTP too: hanging up while waiting or mid-stream cancels the job and the queue moves on at once."""
    d = daemon_factory(tcp=True)
    streaming = raw_http(d, b'{"model":"syn:slow","messages":[{"role":"user","content":"a b"}],'
                            b'"options":{"num_predict":100000}}')
    assert b"200 OK" in streaming.recv(4096)  # the status line waits for the first token
    waiting = raw_http(d, b'{"model":"syn:chat","messages":[{"role":"user","content":"a b"}],"stream":false}')
    with connect(d) as c:
        deadline = time.monotonic() + 5
        while c.call("status")["depth"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiting.close()
        deadline = time.monotonic() + 5.0
        while c.call("status")["depth"] != 0:
            assert time.monotonic() < deadline, "the waiting job of a closed HTTP connection stayed queued"
            time.sleep(0.02)
        c.send("chat", rid="next", model="syn:chat", messages=HI)
        wait_for(c, "next", "queued")
        t0 = time.monotonic()
        streaming.close()
        assert started_within(c, "next", t0) < 5.0  # the abandoned stream would never have ended
        assert final(c, "next")["ev"] == "done"
    t = assert_accounting(d)
    assert (t["cancelled"], t["done"]) == (2, 1)


# ---- model names never leave the models directory ------------------------------------------------

EVIL_NAMES = ["../../etc/passwd", "/etc/passwd", "syn:chat\x00", "a\x00/../../b", "..", "../x:latest",
              "syn/../../escape", "ns/..:tag", "escape/../../../tmp/x", "C:\\Windows\\x", "%2e%2e/x"]


def test_path_traversal_names_are_refused(daemon_factory: Factory, tmp_path: Path) -> None:
    """On the line protocol and on every HTTP route that takes a name: a 400 / bad_request, nothing written."""
    d = daemon_factory(tcp=True)
    before = sorted(p for p in tmp_path.rglob("*") if not p.name.startswith("daemon-"))
    for name in EVIL_NAMES:
        refused_everywhere(d, name)
    after = sorted(p for p in tmp_path.rglob("*") if not p.name.startswith("daemon-"))
    assert after == before
    assert_accounting(d)


def refused_everywhere(d: DaemonProc, name: str) -> None:
    with connect(d) as c:
        for op, fields in (("chat", {"messages": HI}), ("embed", {"input": ["x"]}), ("show", {}), ("load", {})):
            ev = final(c, c.send(op, model=name, **fields)) if op != "show" else c._next_for(c.send(op, model=name))
            assert ev.get("code") == "bad_request", (op, ev)
    requests = [("POST", "/api/show", {"model": name}), ("POST", "/api/chat", {"model": name, "messages": HI}),
                ("POST", "/api/generate", {"model": name, "prompt": "x"}), ("POST", "/api/embed", {"model": name, "input": "x"}),
                ("POST", "/api/create", {"model": name, "from": "syn:chat"}),
                ("POST", "/api/create", {"model": "ok:1", "from": name}),
                ("POST", "/api/copy", {"source": "syn:chat", "destination": name}),
                ("POST", "/api/copy", {"source": name, "destination": "ok:2"}),
                ("DELETE", "/api/delete", {"model": name}), ("POST", "/api/pull", {"model": name}),
                ("POST", "/v1/chat/completions", {"model": name, "messages": HI}),
                ("POST", "/v1/embeddings", {"model": name, "input": "x"})]
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        for method, path, body in requests:
            r = h.request(method, path, json=body)
            assert r.status_code == 400, (method, path, body, r.status_code, r.text)
        r = h.get("/v1/models/" + name.replace("\x00", "%00"))
        assert r.status_code == 404, (name, r.status_code, r.text)
