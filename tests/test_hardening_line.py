"""Issue 15, items 7, 8 and 13 on the line protocol and the socket: strangers on TCP get one bounded
line at a time and a few key attempts; `--socket` never deletes what is not a socket."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest

from daemon_proc import DaemonProc, start_daemon, synthetic_models

KEY = "s3cret"


@pytest.fixture
def keyed(daemon_factory: Callable[..., DaemonProc]) -> DaemonProc:
    return daemon_factory(tcp=True, env={"RK_API_KEY": KEY, "RK_HEADER_TIMEOUT": "1"})


def read_until_closed(s: socket.socket, limit_s: float = 30) -> tuple[list[dict], bool]:
    """Events until the daemon closes the connection (True) or `limit_s` passes (False)."""
    s.settimeout(limit_s)
    buf = b""
    try:
        while chunk := s.recv(65536):
            buf += chunk
    except socket.timeout:
        return [orjson.loads(ln) for ln in buf.splitlines() if ln], False
    except ConnectionResetError:
        pass
    return [orjson.loads(ln) for ln in buf.splitlines() if ln], True


def test_stranger_cannot_park_a_partial_line(keyed: DaemonProc) -> None:
    """Without the key, a line must arrive whole within the header timeout, not the 300 s idle timeout."""
    s = socket.create_connection(("127.0.0.1", keyed.tcp_port))
    s.sendall(b'{"id":"a","op":"embed","input":["' + b"x" * 100_000)  # no end, no newline
    t0 = time.monotonic()
    events, closed = read_until_closed(s)
    assert closed, "the partial line was held for the idle timeout"
    assert time.monotonic() - t0 < 25
    assert events == []
    assert "no complete authenticated line" in keyed.log()


def test_authenticated_peer_may_send_slowly(keyed: DaemonProc) -> None:
    """Once the key was shown, the idle timeout applies again: a line may take longer than the header timeout."""
    with socket.create_connection(("127.0.0.1", keyed.tcp_port), timeout=30) as s:
        f = s.makefile("rb")
        s.sendall(orjson.dumps({"id": "v", "op": "version", "key": KEY}) + b"\n")
        assert orjson.loads(f.readline())["ev"] == "version"
        s.sendall(b'{"id":"w","op":')
        time.sleep(2.5)  # longer than RK_HEADER_TIMEOUT=1
        s.sendall(b'"version"}\n')
        assert orjson.loads(f.readline())["ev"] == "version"


def test_wrong_keys_close_the_connection_after_five(keyed: DaemonProc) -> None:
    s = socket.create_connection(("127.0.0.1", keyed.tcp_port))
    lines = [orjson.dumps({"id": f"k{i}", "op": "version", "key": f"guess{i}"}) for i in range(200)]
    lines[2] = b"not json at all"  # a line without any key is a miss too
    try:
        s.sendall(b"\n".join(lines) + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: that is the point
    events, closed = read_until_closed(s)
    s.close()
    assert closed
    assert [e["code"] for e in events] == ["unauthorized"] * 5, events
    assert "5 lines without the right API key" in keyed.log()
    with keyed.client(tcp=True, api_key=KEY) as c:  # the right key still works, on a new connection
        assert c.call("version")["protocol"] == 1


def test_wrong_key_then_right_key_is_fine(keyed: DaemonProc) -> None:
    with socket.create_connection(("127.0.0.1", keyed.tcp_port), timeout=30) as s:
        f = s.makefile("rb")
        s.sendall(orjson.dumps({"id": "a", "op": "version", "key": "typo"}) + b"\n")
        assert orjson.loads(f.readline())["code"] == "unauthorized"
        s.sendall(orjson.dumps({"id": "b", "op": "version", "key": KEY}) + b"\n")
        assert orjson.loads(f.readline())["ev"] == "version"
        s.sendall(orjson.dumps({"id": "c", "op": "version"}) + b"\n")  # authenticated for the connection
        assert orjson.loads(f.readline())["ev"] == "version"


# ---- 7: --socket never deletes a regular file ------------------------------------------------------


def test_socket_path_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    synthetic_models(tmp_path / "models")
    proc = subprocess.run([sys.executable, "-m", "rk", "serve", "--socket", str(notes), "--models-dir",
                           str(tmp_path / "models")], capture_output=True, text=True, timeout=60,
                          env={"RK_BUNDLED": "0", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    assert "is not a socket" in proc.stderr
    assert notes.read_text() == "my notes\n"


def test_stale_socket_is_still_replaced(tmp_path: Path) -> None:
    sock = tmp_path / "rk.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # bound, never listened: a stale socket file
    synthetic_models(tmp_path / "models")
    d = start_daemon(tmp_path / "d", models_dir=tmp_path / "models", bundled=False, socket_path=sock)
    try:
        with d.client() as c:
            assert c.call("version")["protocol"] == 1
    finally:
        d.stop()
