"""Bad input on the line protocol gets an error event with a code, and the connection keeps working."""
from __future__ import annotations

import socket

import orjson
import pytest

from daemon_proc import DaemonProc


def raw_exchange(sock: socket.socket, f, line: bytes) -> dict:
    sock.sendall(line + b"\n")
    return orjson.loads(f.readline())


@pytest.mark.parametrize("line, code", [
    (b"{not json", "bad_request"),
    (b'{"id":"a"}', "bad_request"),
    (b'{"id":"a","op":"dance"}', "bad_request"),
    (b'{"op":"version"}', "bad_request"),
    (b'{"id":"a","op":"chat","model":"syn:chat","messages":"hi"}', "bad_request"),
    (b'{"id":"a","op":"chat","model":"syn:chat","messages":[{"role":"user","content":5}]}', "bad_request"),
    (b'{"id":"a","op":"chat","model":"syn:chat","messages":[]}', "bad_request"),
    (b'{"id":"a","op":"chat","model":"syn:chat","messages":[{"role":"user","content":"x"}],"options":{"temperature":"hot"}}',
     "bad_request"),
    (b'{"id":"a","op":"embed","model":"syn:embed","input":[]}', "empty_input"),
    (b'{"id":"a","op":"embed","model":"syn:embed","input":["  "]}', "empty_input"),
    (b'{"id":"a","op":"embed","model":"syn:embed","input":[1,2]}', "bad_request"),
    (b'{"id":"a","op":"chat","model":"nope:1","messages":[{"role":"user","content":"x"}]}', "model_not_found"),
    (b'{"id":"a","op":"embed","model":"syn:chat","input":["x"]}', "not_embedding_model"),
    (b'{"id":"a","op":"chat","model":"syn:embed","messages":[{"role":"user","content":"x"}]}', "not_chat_model"),
    (b'{"id":"a","op":"chat","model":"../../etc/passwd","messages":[{"role":"user","content":"x"}]}', "bad_request"),
    (b'{"id":"a","op":"show","model":"/etc/passwd"}', "bad_request"),
    (b'{"id":"a","op":"show","model":"a\\u0000b"}', "bad_request"),
    (b'{"id":"a","op":"cancel","target":"nothing"}', "bad_request"),
    (b'[1,2,3]', "bad_request"),
    (b'"just a string"', "bad_request"),
])
def test_bad_lines_get_error_events_and_connection_survives(syn: DaemonProc, line: bytes, code: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(syn.socket))
        f = s.makefile("rb")
        assert raw_exchange(s, f, b'{"id":"v0","op":"version"}')["ev"] == "version"
        ev = raw_exchange(s, f, line)
        assert ev["ev"] == "error" and ev["code"] == code, ev
        assert ev["message"]
        assert raw_exchange(s, f, b'{"id":"v","op":"version"}')["ev"] == "version"


def test_oversize_line_is_refused_and_connection_survives(daemon_factory) -> None:
    d = daemon_factory(env={"RK_MAX_BODY": "4096"})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket))
        f = s.makefile("rb")
        big = b'{"id":"x","op":"embed","input":["' + b"a" * 20000 + b'"]}'
        ev = raw_exchange(s, f, big)
        assert ev["code"] == "request_too_large"
        assert raw_exchange(s, f, b'{"id":"v","op":"version"}')["ev"] == "version"


def test_same_socket_speaks_line_protocol_and_http(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        assert c.call("version")["protocol"] == 1
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(syn_daemon.socket))
        s.sendall(b"GET /api/version HTTP/1.1\r\nHost: rk\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert "version" in orjson.loads(body)


def test_status_and_models(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        models = {m["name"]: m for m in c.call("models")["models"]}
        snap = c.call("status")
    assert {"syn:chat", "syn:embed"} <= set(models)
    assert models["syn:embed"]["capabilities"] == ["embedding"]
    assert models["syn:chat"]["capabilities"] == ["completion"]  # synthetic chat models do not embed
    assert snap["queue"] == [] and "totals" in snap and snap["version"]
