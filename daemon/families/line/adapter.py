"""The line protocol: one JSON object per line each way. Parses requests into jobs and renders events.

Version 1. See docs/protocol.md for every op and event.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from rk.daemon.errors import RkError
from rk.daemon.events import (
    Done,
    Event,
    Failed,
    Loading,
    Prefill,
    Prefilling,
    Queued,
    Started,
    Thinking,
    Token,
    ToolCalled,
    Vectors,
)
from rk.daemon.families import fields as f
from rk.daemon.families.ollama import adapter as ollama  # the line protocol speaks Ollama's message shapes
from rk.daemon.jobs import ChatJob, EmbedJob, GenSpec, Job, ModelAction
from rk.daemon.settings import Settings
from rk.daemon.store.importer import ImportRequest
from rk.daemon.store.pull.events import PullEvent

PROTOCOL_VERSION = 1
JOB_OPS = ("chat", "generate", "embed", "load", "unload")
INFO_OPS = ("status", "models", "show", "version", "watch", "cancel", "import", "pull", "drain", "undrain")


@dataclass(frozen=True)
class Request:
    """One parsed line: a job to queue, or an op answered at once."""

    id: str
    op: str
    job: Job | None = None
    target: str | None = None  # cancel: a request id on this connection, or a job id from status
    model: str | None = None  # show, pull
    key: str | None = None  # API key, for TCP connections that require one
    imported: ImportRequest | None = None  # import


def request_id(obj: Any) -> str | None:
    """The request's id if it has a usable one, so even a refused line is answered under its id."""
    if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool):
        return str(obj["id"])
    return None


def parse_line(line: bytes, settings: Settings, peer: str) -> Request:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RkError("bad_request", f"line is not valid JSON: {e}") from None
    d = f.obj(obj, "line")
    rid = request_id(d)
    if rid is None:
        raise f.bad("id", "is required: a string chosen by the client, echoed in every event")
    op = f.string(d, "op", required=True)
    key = f.string(d, "key")
    if op in JOB_OPS:
        return Request(rid, op, job=_job(d, op, settings, peer), key=key)
    if op == "cancel":
        return Request(rid, op, target=f.string(d, "target", required=True), key=key)
    if op == "import":
        return Request(rid, op, imported=_import_request(d), key=key)
    if op in ("show", "pull"):
        return Request(rid, op, model=f.string(d, "model", required=True), key=key)
    if op in INFO_OPS:
        return Request(rid, op, key=key)
    raise RkError("bad_request", f"unknown op {op!r}; ops are {', '.join(JOB_OPS + INFO_OPS)}", param="op")



def _job(d: dict[str, Any], op: str, settings: Settings, peer: str) -> Job:
    """The job a `chat`, `generate`, `embed`, `load` or `unload` line asks for."""
    if op in ("chat", "generate"):
        o = f.obj(d.get("options") or {}, "options")
        model = f.string(d, "model") or settings.default_chat_model
        keep = f.number(d, "keep_alive")
        opts = f.gen_options(o, max_tokens_keys=("max_tokens", "num_predict"))
        common = dict(options=opts, tools=f.tools(d), think=ollama.think(d.get("think")),
                      format=ollama.json_format(d.get("format")))
        if op == "chat":
            spec = GenSpec(messages=f.messages(d, ollama.message), **common)
        else:
            spec = GenSpec(prompt=f.string(d, "prompt", required=True), raw=f.boolean(d, "raw", False), **common)
        return ChatJob(model=model, spec=spec, keep_alive_s=keep, source="cli", peer=peer)
    if op == "embed":
        texts = f.texts(d.get("input"))
        if not texts or any(not t.strip() for t in texts):
            raise RkError("empty_input", "'input' must hold non-empty texts", param="input")
        model = f.string(d, "model") or settings.default_embed_model
        return EmbedJob(model=model, texts=texts, truncate=f.boolean(d, "truncate", True),
                        keep_alive_s=f.number(d, "keep_alive"), source="cli", peer=peer)
    model = f.string(d, "model", required=True)
    return ModelAction(model=model, action=op, keep_alive_s=f.number(d, "keep_alive"), source="cli", peer=peer)


def _import_request(d: dict[str, Any]) -> ImportRequest:
    caps = d.get("capabilities") or []
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise f.bad("capabilities", "must be a list of capability names")
    return ImportRequest(
        path=f.string(d, "path", required=True) or "", name=f.string(d, "name", required=True) or "",
        capabilities=tuple(caps), context=f.integer(d, "context", lo=16), runtime=f.string(d, "runtime"),
        embed=f.boolean(d, "embed", False), pooling=f.string(d, "pooling"), tokenizer=f.string(d, "tokenizer"),
        force=f.boolean(d, "force", False))

def render(rid: str, job_id: str, ev: Event) -> dict[str, Any]:
    """One event as its wire object."""
    match ev:
        case Queued(position=p):
            return {"id": rid, "ev": "queued", "job": job_id, "position": p}
        case Started():
            return {"id": rid, "ev": "started", "job": job_id}
        case Loading(model=m):
            return {"id": rid, "ev": "loading", "model": m}
        case Prefilling(done=done, total=total):
            return {"id": rid, "ev": "prefilling", "done": done, "total": total}
        case Prefill(ms=ms, tokens=n, cached=cached):
            return {"id": rid, "ev": "prefill", "ms": round(ms, 3), "tokens": n, "cached": cached}
        case Token(text=t):
            return {"id": rid, "ev": "token", "text": t}
        case Thinking(text=t):
            return {"id": rid, "ev": "thinking", "text": t}
        case ToolCalled(call=c):
            return {"id": rid, "ev": "tool_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
        case Vectors(index=i, embeddings=e, tokens=n):
            return {"id": rid, "ev": "vectors", "index": i, "dim": int(e.shape[1]), "tokens": n, "embeddings": e}
        case Done(stats=s):
            return {"id": rid, "ev": "done", "stats": s.to_dict()}
        case Failed(error=e):
            return error(rid, e)
    raise TypeError(f"unknown event {ev!r}")


def progress(rid: str, ev: PullEvent) -> dict[str, Any]:
    """A pull's status line (Ollama's fields) as a `progress` event."""
    return {"id": rid, "ev": "progress", **ev.wire()}


def error(rid: str | None, e: RkError) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rid, "ev": "error", "code": e.code, "message": e.message}
    if e.param:
        out["param"] = e.param
    return out


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
