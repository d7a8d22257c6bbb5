"""The client side of the line protocol, shared by the CLI's client and `rk top`: how a request is
written, how an event is read, and which events end a request."""
from __future__ import annotations

from typing import Any

import orjson

# A request ends with exactly one of these; `watch` never ends (its snapshots stream until close).
FINAL_EVENTS = frozenset({"done", "error", "models", "model", "version", "snapshot"})
STREAMING_OPS = frozenset({"watch"})


class DaemonError(RuntimeError):
    """The daemon answered a request with an `error` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_request(rid: str, op: str, key: str | None, fields: dict[str, Any]) -> bytes:
    """One request line; fields set to None are left out."""
    msg = {"id": rid, "op": op, **{k: v for k, v in fields.items() if v is not None}}
    if key:
        msg["key"] = key
    return orjson.dumps(msg) + b"\n"


def decode_event(line: bytes) -> dict[str, Any]:
    ev = orjson.loads(line)
    if not isinstance(ev, dict):
        raise ValueError(f"not an event: {line[:80]!r}")
    return ev


def check(ev: dict[str, Any]) -> dict[str, Any]:
    """The event itself, or its `error` raised as DaemonError."""
    if ev.get("ev") == "error":
        raise DaemonError(str(ev.get("code", "error")), str(ev.get("message", "")))
    return ev


def is_final(op: str, ev: dict[str, Any]) -> bool:
    """Whether `ev` is the last event of a request of `op` (a `watch` has none)."""
    return op not in STREAMING_OPS and ev.get("ev") in FINAL_EVENTS
