"""Raw HTTP against a real daemon: exact bodies and headers, limits, auth, CORS, the Unix socket, and the queue.

Covers what the client packages hide: error shapes per dialect, the wire framing of both stream
dialects, and the queue behaviour HTTP shares with the line protocol (order, cancel on disconnect).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import orjson
import pytest

from daemon_proc import DaemonProc

Factory = Callable[..., DaemonProc]
CHAT = {"model": "syn:chat", "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
def http(syn: DaemonProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=syn.base_url, timeout=30) as c:
        yield c


def ollama_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


def openai_error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ---- exact answers -----------------------------------------------------------------------------


def test_root_and_head_exact(http: httpx.Client) -> None:
    r = http.get("/")
    assert r.status_code == 200 and r.content == b"Ollama is running"
    assert r.headers["content-type"].startswith("text/plain")
    h = http.head("/")
    assert h.status_code == 200 and h.content == b""
    assert http.head("/api/version").status_code == 200 and http.head("/api/tags").status_code == 200


def test_request_id_echoed_or_made_on_every_response(http: httpx.Client) -> None:
    assert http.get("/api/tags", headers={"X-Request-Id": "abc-1"}).headers["x-request-id"] == "abc-1"
    assert http.post("/api/chat", json=CHAT, headers={"X-Request-Id": "abc-2"}).headers["x-request-id"] == "abc-2"
    assert http.get("/v1/nothing", headers={"X-Request-Id": "abc-3"}).headers["x-request-id"] == "abc-3"
    assert len(http.get("/api/version").headers["x-request-id"]) == 32


def test_sse_framing_exact(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json=CHAT | {"stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"] == "text/event-stream" and r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"
    assert r.text.endswith("\n\n") and "\n\n\n" not in r.text
    events = r.text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["delta"] == {} and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 6


def test_ndjson_framing_exact(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": "syn:chat", "prompt": "one two"})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = r.content.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])  # one object per line, no blank line
    objs = [orjson.loads(ln) for ln in lines[:-1]]
    assert all("response" in o and "done" in o for o in objs) and [o["done"] for o in objs].count(True) == 1
    final = objs[-1]
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(final[key], int)


def test_stream_false_is_one_json_object(http: httpx.Client) -> None:
    r = http.post("/api/chat", json=CHAT | {"stream": False})
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json()["message"] == {"role": "assistant", "content": "one two three "} and r.json()["done"] is True


def test_path_normalised(http: httpx.Client) -> None:
    base = str(http.base_url).rstrip("/")  # an absolute URL: httpx would read "//v1" as a host
    assert http.get(base + "//v1//models").json()["object"] == "list"
    assert "models" in http.get("/api/tags/").json()
    assert http.post("/api/chat/", json=CHAT | {"stream": False}).json()["done"] is True
    assert http.get("/v1/models/syn:chat/").json()["id"] == "syn:chat"


# ---- legacy embeddings -------------------------------------------------------------------------

EMPTY = "empty input parameter; embeddings require non-empty text"


@pytest.mark.parametrize("field", ["prompt", "input"])
def test_legacy_embeddings_prompt_or_input(http: httpx.Client, field: str) -> None:
    r = http.post("/api/embeddings", json={"model": "syn:embed", field: "the cat sat"})
    assert r.status_code == 200 and len(r.json()["embedding"]) == 64


@pytest.mark.parametrize("body", [{}, {"prompt": ""}, {"input": ""}, {"prompt": "   "}, {"prompt": "", "input": "\t"}])
def test_legacy_embeddings_empty_or_missing_is_400(http: httpx.Client, body: dict[str, Any]) -> None:
    r = http.post("/api/embeddings", json={"model": "syn:embed"} | body)
    assert r.status_code == 400 and r.json() == {"error": EMPTY}


def test_embed_without_input_loads_and_returns_empty_list(http: httpx.Client) -> None:
    assert http.post("/api/embed", json={"model": "syn:embed"}).json() == {"model": "syn:embed", "embeddings": []}
    assert http.post("/api/embed", json={"model": "syn:embed", "input": 5}).json() == {"error": "invalid input type"}


def test_embeddings_stay_in_input_order_across_queue_slices(http: httpx.Client) -> None:
    texts = [f"text number {i} word{i}" for i in range(150)]  # three slices of RK_EMBED_SLICE=64
    many = http.post("/api/embed", json={"model": "syn:embed", "input": texts}).json()["embeddings"]
    data = http.post("/v1/embeddings", json={"model": "syn:embed", "input": texts}).json()["data"]
    assert len(many) == len(data) == 150 and [d["index"] for d in data] == list(range(150))
    for i in (0, 63, 64, 149):
        alone = http.post("/api/embed", json={"model": "syn:embed", "input": texts[i]}).json()["embeddings"][0]
        assert many[i] == alone and np.allclose(data[i]["embedding"], alone)


# ---- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/show", "/v1/chat/completions",
                                  "/v1/embeddings", "/v1/completions"])
@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]"])
def test_malformed_body_is_400_in_dialect(http: httpx.Client, path: str, body: bytes) -> None:
    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    message = openai_error(r)["message"] if path.startswith("/v1") else ollama_error(r)
    assert message


@pytest.mark.parametrize("path,body,field", [
    ("/api/chat", {"model": 5, "messages": []}, "model"),
    ("/api/chat", {"model": "syn:chat", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ("/api/generate", {"model": "syn:chat", "prompt": "x", "options": {"temperature": "warm"}}, "temperature"),
    ("/api/generate", {"model": "syn:chat", "prompt": "x", "stream": "no"}, "stream"),
    ("/v1/chat/completions", {"model": "syn:chat", "messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"model": "syn:chat", "messages": CHAT["messages"], "max_tokens": "9"}, "max_tokens"),
    ("/v1/embeddings", {"model": "syn:embed", "input": {"text": "x"}}, "input"),
])
def test_wrong_types_name_the_field(http: httpx.Client, path: str, body: dict[str, Any], field: str) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 400
    if path.startswith("/v1"):
        assert openai_error(r)["param"] == field
    else:
        assert f"'{field}'" in ollama_error(r)


@pytest.mark.parametrize("path,body", [("/api/chat", CHAT), ("/api/embed", {"input": "x"}),
                                       ("/v1/chat/completions", CHAT), ("/v1/embeddings", {"input": "x"})])
def test_unknown_model_is_404(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    r = http.post(path, json=body | {"model": "ghost:1b"})
    assert r.status_code == 404
    if path.startswith("/v1"):
        assert openai_error(r)["code"] == "model_not_found"
    else:
        assert "ghost:1b" in ollama_error(r)
    assert http.get("/v1/models/library/ghost:1b").status_code == 404


@pytest.mark.parametrize("stream", [True, False])
def test_prompt_too_large_is_400_before_any_byte(http: httpx.Client, stream: bool) -> None:
    messages = [{"role": "user", "content": "w " * 5000}]  # syn:chat takes 4096
    r = http.post("/api/chat", json={"model": "syn:chat", "messages": messages, "stream": stream})
    assert r.status_code == 400 and "4096" in ollama_error(r)
    r = http.post("/v1/chat/completions", json={"model": "syn:chat", "messages": messages, "stream": stream})
    assert r.status_code == 400 and openai_error(r)["code"] == "prompt_too_large"


def test_oversize_body_is_413(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_MAX_BODY": "4096"})
    big = CHAT | {"messages": [{"role": "user", "content": "x" * 10_000}]}
    with httpx.Client(base_url=d.base_url, timeout=30) as c:
        r = c.post("/api/chat", json=big)
        assert r.status_code == 413 and "4096" in ollama_error(r)
        r = c.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and openai_error(r)["code"] == "request_too_large"
        chunked = c.post("/api/chat", content=iter([orjson.dumps(big)]))  # no Content-Length
        assert chunked.status_code == 413
        assert c.post("/api/chat", json=CHAT | {"stream": False}).status_code == 200


# ---- auth and CORS -----------------------------------------------------------------------------


def test_api_key_required_on_tcp_only(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_API_KEY": "sesame"})
    with httpx.Client(base_url=d.base_url, timeout=30) as c:
        r = c.get("/api/tags")
        assert r.status_code == 401 and "API key" in ollama_error(r)
        r = c.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and openai_error(r)["code"] == "invalid_api_key"
        r = c.post("/api/chat", json=CHAT, headers={"Authorization": "Basic sesame"})
        assert r.status_code == 401
        assert c.get("/api/tags", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert c.get("/").text == "Ollama is running"  # health probes stay open
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://rk", timeout=30) as u:
        assert u.get("/api/tags").status_code == 200  # the socket's file mode is its guard


def test_cors_preflight_and_headers(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_ORIGINS": "https://app.example", "RK_API_KEY": "k"})
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    with httpx.Client(base_url=d.base_url, timeout=30) as c:
        for origin in ("https://app.example", "http://localhost:3000"):
            r = c.options("/v1/chat/completions", headers=pre | {"Origin": origin})
            assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin
            assert "POST" in r.headers["access-control-allow-methods"]
            assert r.headers["access-control-allow-headers"] == "authorization, content-type"
        r = c.options("/api/chat", headers=pre | {"Origin": "https://evil.example"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        r = c.get("/api/tags", headers={"Origin": "https://app.example", "Authorization": "Bearer k"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in c.get("/api/tags", headers={"Origin": "https://evil.example"}).headers


# ---- the Unix socket ---------------------------------------------------------------------------


def test_unix_socket_serves_both_apis(syn: DaemonProc) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(syn.socket)), base_url="http://rk", timeout=30) as u:
        assert u.get("/").text == "Ollama is running"
        assert u.post("/api/chat", json=CHAT | {"stream": False}).json()["message"]["content"] == "one two three "
        r = u.post("/v1/chat/completions", json=CHAT | {"stream": True})
        assert r.text.endswith("data: [DONE]\n\n")


# ---- the queue ---------------------------------------------------------------------------------


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def queue_of(d: DaemonProc) -> list[dict[str, Any]]:
    with d.client() as c:
        return c.call("status")["queue"]


def slow_chat(tokens: int) -> dict[str, Any]:
    """A syn:slow chat (20 tokens/s) of exactly `tokens` tokens; `num_predict` is read by both protocols."""
    return {"model": "syn:slow", "messages": [{"role": "user", "content": "w " * tokens}],
            "options": {"num_predict": tokens}}


def test_http_and_line_jobs_share_one_fifo(syn: DaemonProc) -> None:
    d = syn
    done: dict[str, httpx.Response] = {}

    def http_chat() -> None:
        with httpx.Client(base_url=d.base_url, timeout=30) as c:
            done["r"] = c.post("/api/chat", json=slow_chat(10) | {"stream": False})

    t = threading.Thread(target=http_chat)
    t.start()
    wait_for(lambda: any(j["source"] == "ollama" for j in queue_of(d)))
    with d.client() as c:
        rid = c.send("chat", model="syn:chat", messages=[{"role": "user", "content": "after you"}])
        first = next(c.events(rid))
        assert first["ev"] == "queued" and first["position"] == 2  # the HTTP job is ahead of it
        assert [j["source"] for j in queue_of(d)] == ["ollama", "cli"]
        events = list(c.events(rid))
    t.join()
    assert done["r"].status_code == 200 and events[-1]["ev"] == "done"


def test_queue_full_is_503_with_retry_after_and_metadata_still_answers(daemon_factory: Factory) -> None:
    d = daemon_factory(tcp=True, env={"RK_MAX_QUEUE": "1"})
    with d.client() as line, httpx.Client(base_url=d.base_url, timeout=30) as c:
        running = line.send("chat", **slow_chat(100))
        wait_for(lambda: [j["state"] for j in queue_of(d)] in (["generating"], ["answering"]))
        waiting = line.send("chat", **slow_chat(100))
        wait_for(lambda: len(queue_of(d)) == 2)
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and r.headers["retry-after"] and openai_error(r)["code"] == "queue_full"
        r = c.post("/api/chat", json=CHAT)
        assert r.status_code == 503 and r.headers["retry-after"] and ollama_error(r)
        for path in ("/api/tags", "/api/ps", "/v1/models", "/api/version", "/"):
            t0 = time.monotonic()
            assert c.get(path).status_code == 200
            assert time.monotonic() - t0 < 2.5, path  # never behind the queue: the running job alone takes 5 s
        assert c.post("/api/show", json={"name": "syn:chat"}).status_code == 200
        for rid in (waiting, running):
            line.send("cancel", target=rid)


def test_streaming_client_disconnect_cancels_and_next_starts_fast(syn: DaemonProc) -> None:
    d = syn
    body = orjson.dumps(slow_chat(200))  # 10 s of tokens at 20 tok/s
    s = socket.create_connection(("127.0.0.1", d.tcp_port))
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Request-Id: gone-1\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b'"content":"w ' not in got:  # the first token arrived
        chunk = s.recv(4096)
        assert chunk
        got += chunk
    with d.client() as c:
        rid = c.send("chat", model="syn:chat", messages=[{"role": "user", "content": "next"}])
        assert next(c.events(rid))["position"] == 2
        s.close()
        t0 = time.monotonic()
        for ev in c.events(rid):
            if ev["ev"] == "started":
                break
        assert time.monotonic() - t0 < 5.0  # the abandoned job would have run 10 s more
        recent = c.call("status")["recent"]
    assert any(j["outcome"] == "cancelled" and j["source"] == "ollama" for j in recent)


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_client_that_leaves_while_waiting_is_dequeued(syn: DaemonProc, path: str) -> None:
    d = syn
    with d.client() as line:
        blocker = line.send("chat", **slow_chat(100))
        wait_for(lambda: len(queue_of(d)) == 1)
        body = orjson.dumps(slow_chat(5) | {"stream": False})
        s = socket.create_connection(("127.0.0.1", d.tcp_port))
        s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (path.encode(), len(body), body))
        wait_for(lambda: len(queue_of(d)) == 2)
        s.close()
        wait_for(lambda: len(queue_of(d)) == 1, timeout=1.0)
        line.send("cancel", target=blocker)
