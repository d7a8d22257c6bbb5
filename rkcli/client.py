"""A small synchronous client of the daemon's line protocol, used by the CLI (and the TUI's workers).

It finds the daemon the same way the daemon chooses where to listen: `--host` / `RK_HOST` for TCP,
else `--socket` / `RK_SOCKET`, else the default per-user socket.
"""
from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rk.paths import default_socket_path
from rk.protocol import DaemonError, check, decode_event, encode_request, is_final

Socket = socket.socket  # `Endpoint.socket` (a path) shadows the module inside the class

__all__ = ["Client", "DaemonError", "DaemonUnavailable", "Endpoint"]


class DaemonUnavailable(ConnectionError):
    """No daemon answered where we looked."""


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon is: a Unix socket path or a TCP host:port, plus an optional API key."""

    socket: Path | None = None
    host: str | None = None
    api_key: str | None = None

    @classmethod
    def resolve(cls, socket_path: str | None = None, host: str | None = None, api_key: str | None = None) -> Endpoint:
        host = host or os.environ.get("RK_HOST") or None
        key = api_key or os.environ.get("RK_API_KEY") or None
        if host:
            return cls(host=host, api_key=key)
        path = socket_path or os.environ.get("RK_SOCKET") or None
        return cls(socket=Path(path) if path else default_socket_path(), api_key=key)

    def describe(self) -> str:
        return f"tcp {self.host}" if self.host else f"socket {self.socket}"

    def connect(self, timeout: float | None = 5.0) -> Socket:
        try:
            if self.host:
                host, _, port = self.host.rpartition(":")
                if not port.isdigit():
                    host, port = self.host, "11434"
                sock = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(str(self.socket))
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout, OSError) as e:
            raise DaemonUnavailable(f"no rk daemon at {self.describe()} ({e.strerror or e}); start one with: rk serve") from None
        sock.settimeout(None)
        return sock


class Client:
    """One connection; many requests may be in flight, told apart by their ids."""

    def __init__(self, endpoint: Endpoint, timeout: float | None = 5.0) -> None:
        self.endpoint = endpoint
        self.sock = endpoint.connect(timeout)
        self.file = self.sock.makefile("rb")
        self._ids = itertools.count(1)
        self._backlog: list[dict[str, Any]] = []
        self._ops: dict[str, str] = {}  # request id -> op, to know which event ends it

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def new_id(self, prefix: str = "r") -> str:
        return f"{prefix}{next(self._ids)}"

    def send(self, op: str, rid: str | None = None, **fields: Any) -> str:
        rid = rid or self.new_id()
        self._ops[rid] = op
        try:
            self.sock.sendall(encode_request(rid, op, self.endpoint.api_key, fields))
        except OSError:  # a broken socket is the daemon going away, not our stdout closing
            raise DaemonUnavailable("the daemon closed the connection") from None
        return rid

    def read(self) -> dict[str, Any]:
        """The next event from any request on this connection."""
        if self._backlog:
            return self._backlog.pop(0)
        return self._read_socket()

    def _read_socket(self) -> dict[str, Any]:
        try:
            line = self.file.readline()
        except ConnectionError:
            line = b""
        if not line:
            raise DaemonUnavailable("the daemon closed the connection")
        return decode_event(line)

    def _next_for(self, rid: str) -> dict[str, Any]:
        for i, ev in enumerate(self._backlog):
            if ev.get("id") == rid:
                return self._backlog.pop(i)
        while True:
            ev = self._read_socket()
            if ev.get("id") == rid:
                return ev
            self._backlog.append(ev)

    def events(self, rid: str) -> Iterator[dict[str, Any]]:
        """Events of one request until its final one; raises DaemonError on `error`."""
        op = self._ops.get(rid, "")
        try:
            while True:
                ev = check(self._next_for(rid))
                yield ev
                if is_final(op, ev):
                    return
        finally:
            self._ops.pop(rid, None)

    def wait(self, rid: str) -> dict[str, Any]:
        """The final event of a request sent earlier (its other events are passed over)."""
        events = list(self.events(rid))
        return events[-1] if events else {}

    def reply(self, rid: str) -> tuple[str, dict[str, Any]]:
        """A generation's whole answer text and the figures of its `done` event."""
        text: list[str] = []
        stats: dict[str, Any] = {}
        for ev in self.events(rid):
            if ev["ev"] == "token":
                text.append(ev["text"])
            elif ev["ev"] == "done":
                stats = ev["stats"]
        return "".join(text), stats

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its final event."""
        return self.wait(self.send(op, **fields))
