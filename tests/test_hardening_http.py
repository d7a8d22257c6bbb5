"""Issue 15, items 5, 8 and 13 on HTTP: what a web page, a DNS-rebinding name, a stalled body and a
malformed request can do to a keyless loopback daemon (the README's default)."""
from __future__ import annotations

import socket
import time
from typing import Callable

import httpx
import orjson
import pytest

from rk.daemon.store.models import dir_name

from daemon_proc import DaemonProc

EVIL = "https://evil.example"
CHAT = {"model": "syn:chat", "messages": [{"role": "user", "content": "a b"}], "stream": False}


def create(h: httpx.Client, model: str, system: str) -> httpx.Response:
    return h.post("/api/create", json={"model": model, "from": "syn:chat", "system": system, "stream": False})


def system_of(h: httpx.Client, model: str) -> str | None:
    r = h.post("/api/show", json={"model": model})
    return r.json().get("system") if r.status_code == 200 else None


@pytest.fixture
def d(daemon_factory: Callable[..., DaemonProc]) -> DaemonProc:
    return daemon_factory(tcp=True)


# ---- 5: cross-site requests and DNS rebinding ----------------------------------------------------


def test_page_cannot_replace_a_model_with_a_text_plain_post(d: DaemonProc) -> None:
    """`<form enctype=text/plain>` and `fetch(..., {body: string})` need no preflight: refused by type and origin
    (browsers send `Origin` with every POST, so even an allowed local page must send application/json)."""
    body = orjson.dumps({"model": "victim:x", "from": "syn:chat", "system": "pwned", "stream": False})
    local = "http://localhost:3000"
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert create(h, "victim:x", "mine").status_code == 200
        for headers in ({"Content-Type": "text/plain", "Origin": EVIL}, {"Content-Type": "text/plain", "Origin": local},
                        {"Content-Type": "text/plain;charset=UTF-8", "Origin": local},
                        {"Content-Type": "multipart/form-data; boundary=x", "Origin": local}, {"Origin": local},
                        {"Content-Type": "application/x-www-form-urlencoded", "Origin": local}):
            r = h.post("/api/create", content=body, headers=headers)
            assert r.status_code in (403, 415), (headers, r.status_code, r.text)
            assert "error" in r.json()
        assert system_of(h, "victim:x") == "mine"


def test_foreign_origin_is_refused_on_every_request_not_only_preflight(d: DaemonProc) -> None:
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        for method, path, body in (("POST", "/api/chat", CHAT), ("POST", "/v1/chat/completions", CHAT),
                                   ("GET", "/api/tags", None), ("DELETE", "/api/delete", {"model": "syn:chat"})):
            r = h.request(method, path, json=body, headers={"Origin": EVIL})
            assert r.status_code == 403, (path, r.status_code, r.text)
            assert "access-control-allow-origin" not in r.headers
            assert "RK_ORIGINS" in r.text
        assert h.request("OPTIONS", "/api/chat", headers={"Origin": "null", "Access-Control-Request-Method": "POST"}
                         ).status_code == 403
        assert "syn:chat" in [m["name"] for m in h.get("/api/tags").json()["models"]]
        r = h.post("/api/chat", json=CHAT, headers={"Origin": "http://localhost:5173"})  # a local dev page may
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_configured_origin_is_allowed(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True, env={"RK_ORIGINS": "https://chat.example"})
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert h.post("/api/chat", json=CHAT, headers={"Origin": "https://chat.example"}).status_code == 200
        assert h.post("/api/chat", json=CHAT, headers={"Origin": EVIL}).status_code == 403


def test_rebound_host_name_cannot_delete_a_model(d: DaemonProc) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 is same-origin for its browser;
    its requests still carry `Host: evil.example`."""
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert create(h, "victim:x", "mine").status_code == 200
        for host in (f"evil.example:{d.tcp_port}", "evil.example", "localhost.evil.example"):
            r = h.request("DELETE", "/api/delete", json={"model": "victim:x"}, headers={"Host": host})
            assert r.status_code == 403 and "RK_HOSTS" in r.text, (host, r.status_code, r.text)
            assert h.post("/api/chat", json=CHAT, headers={"Host": host}).status_code == 403
        assert system_of(h, "victim:x") == "mine"
        for host in (f"localhost:{d.tcp_port}", "app.localhost", f"127.0.0.1:{d.tcp_port}", "[::1]",
                     f"{socket.gethostname()}:{d.tcp_port}"):
            assert h.get("/api/tags", headers={"Host": host}).status_code == 200, host
        assert h.request("DELETE", "/api/delete", json={"model": "victim:x"},
                         headers={"Host": f"localhost:{d.tcp_port}"}).status_code == 200


def test_configured_host_names_and_keyed_daemons(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True, env={"RK_HOSTS": "box.lan, *.home.arpa"})
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        for host in ("box.lan", "rk.home.arpa:8080"):
            assert h.post("/api/chat", json=CHAT, headers={"Host": host}).status_code == 200, host
        assert h.post("/api/chat", json=CHAT, headers={"Host": "other.lan"}).status_code == 403
    keyed = daemon_factory(tcp=True, env={"RK_API_KEY": "k3y"})  # a page cannot authenticate: any name is fine
    with httpx.Client(base_url=keyed.base_url, timeout=10, headers={"Authorization": "Bearer k3y"}) as h:
        assert h.post("/api/chat", json=CHAT, headers={"Host": "rk.example.net"}).status_code == 200


def test_clients_that_send_no_origin_keep_working(d: DaemonProc) -> None:
    """curl -d (form-urlencoded), scripts posting untyped bytes, LiteLLM (application/octet-stream) and
    `+json` types are not browsers: without an `Origin` any body is read as JSON."""
    body = orjson.dumps(CHAT)
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        for ctype in ("application/x-www-form-urlencoded", None, "application/json; charset=utf-8",
                      "application/vnd.api+json", "application/octet-stream", "text/plain",
                      "multipart/form-data; boundary=x"):
            for path in ("/api/chat", "/v1/chat/completions"):
                r = h.post(path, content=body, headers={"Content-Type": ctype} if ctype else {})
                assert r.status_code == 200, (ctype, path, r.text)
        r = h.post("/api/chat", content=b"model=syn:chat", headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_a_page_may_post_what_needs_a_preflight(d: DaemonProc) -> None:
    """A type outside the safelisted ones made the browser ask first, and the Origin check answered."""
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        for ctype in ("application/octet-stream", "application/json"):
            r = h.post("/api/chat", content=orjson.dumps(CHAT),
                       headers={"Content-Type": ctype, "Origin": "http://localhost:3000"})
            assert r.status_code == 200, (ctype, r.text)


def test_failed_replacement_keeps_the_old_model(d: DaemonProc) -> None:
    """/api/create onto an existing name must not delete it before the new copy is complete."""
    broken = d.models_dir / dir_name("syn:broken")
    broken.mkdir()
    (broken / "manifest.json").write_bytes(orjson.dumps({"name": "syn:broken", "backend": "synthetic", "kind": "chat"}))
    (broken / "weights").symlink_to(broken / "missing")  # copying a dangling link fails half-way
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert create(h, "victim:x", "mine").status_code == 200
        r = h.post("/api/create", json={"model": "victim:x", "from": "syn:broken", "stream": False})
        assert r.status_code == 500 and "could not copy" in r.json()["error"], r.text
        assert system_of(h, "victim:x") == "mine"
        assert [p.name for p in d.models_dir.iterdir() if p.name.startswith(".")] == []  # no staging left


# ---- 8: request bodies have a time limit ---------------------------------------------------------


def _stalled_post(port: int, sent: bytes, declared: int, trickle: bool) -> tuple[bytes, float]:
    """POST a body that stalls (or trickles a byte every 0.2 s); return what came back and when it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (declared, sent))
    t0 = time.monotonic()
    got = b""
    s.settimeout(0.2 if trickle else 30)
    try:
        while time.monotonic() - t0 < 30:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                s.sendall(b" ")  # the trickle: one more byte of the body
                continue
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    finally:
        s.close()
    return got, time.monotonic() - t0


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_slow_body_gets_408_and_the_connection_closes(daemon_factory: Callable[..., DaemonProc], trickle: bool) -> None:
    d = daemon_factory(tcp=True, env={"RK_BODY_TIMEOUT": "1"})
    got, closed_after = _stalled_post(d.tcp_port, b'{"model": "syn:chat", ', 100_000, trickle)  # type: ignore[arg-type]
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"RK_BODY_TIMEOUT" in got
    assert closed_after < 9, "the connection stayed open after the 408 (aiohttp lingers 10 s unless told)"
    with httpx.Client(base_url=d.base_url, timeout=10) as h:  # and the daemon serves others as before
        assert h.post("/api/chat", json=CHAT).status_code == 200


# ---- 13: a malformed request is one line in the log ----------------------------------------------


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Length: banana\r\n\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
]


def test_malformed_requests_log_one_line_each(d: DaemonProc) -> None:
    before = d.log().count("\n")
    for raw in MALFORMED:
        with socket.create_connection(("127.0.0.1", d.tcp_port), timeout=10) as s:
            s.sendall(raw)
            reply = s.recv(4096)
            assert reply.split(b" ")[1].startswith(b"4"), (raw, reply[:100])
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert h.get("/api/version").status_code == 200
    # aiohttp logs before it answers, so every line is in the log by now
    added = d.log().splitlines()[before:]
    assert "Traceback" not in "\n".join(added), "\n".join(added)
    assert len([ln for ln in added if "Error handling request" in ln]) == len(MALFORMED), added
    assert len(added) <= len(MALFORMED) + 2, added


# ---- in-process: the pure checks -----------------------------------------------------------------


def test_host_names_are_parsed_and_judged() -> None:
    from rk.daemon.http.middleware import host_allowed, host_name
    from rk.daemon.settings import Settings

    assert [host_name(h) for h in ("[::1]:8080", "Box.LAN.:80", "localhost", "10.0.0.7:11434", "")] == \
        ["::1", "box.lan", "localhost", "10.0.0.7", ""]
    plain = Settings(tcp="0.0.0.0:11434")
    assert all(host_allowed(h, plain) for h in ("127.0.0.1:1", "[::1]", "192.168.1.9", "a.localhost", "", "LOCALHOST"))
    assert not any(host_allowed(h, plain) for h in ("evil.example", "127.0.0.1.evil.example", "0x7f000001", "local"))
    named = Settings(tcp="rk.box.lan:11434", hosts="*.home.arpa")
    assert host_allowed("rk.box.lan:11434", named) and host_allowed("x.home.arpa", named)
    assert not host_allowed("home.arpa.evil.example", named)
