"""Anthropic Messages (`/v1/messages`) wire format: request JSON -> chat jobs, job output -> messages, stream events
and errors.

Pure translation. The field rules follow shared/reference/agent-apis.md (what Ollama honours, what Claude Code
2.1 and the anthropic SDK send): unknown fields (`cache_control`, `defer_loading`, `context_management`,
`metadata`, `thinking.display`...) are accepted and ignored, because Claude Code answers a 400 by resending a
*bigger* prompt; server tools rk cannot run are dropped and logged; thinking asked of a model that cannot think
is relaxed to none, as Ollama does, because Claude Code always asks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from rk.daemon import media
from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.jobs import ChatJob, Format, Generated, GenSpec, JobStats, Message, Think, Tool, ToolCall
from rk.daemon.media import Image
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.daemon.anthropic")

EFFORTS: dict[str, Think] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
STATUSES = {"queue_full": 529}  # Anthropic's "overloaded", which its SDKs back off and retry
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
               529: "overloaded_error"}


@dataclass(frozen=True)
class MessagesRequest:
    job: ChatJob
    model: str
    stream: bool = False


# ---- requests ----------------------------------------------------------------------------------


def _text_blocks(v: Any, where: str) -> str:
    """`system` (or a system message): a string, or text blocks whose texts are joined."""
    if isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise f.bad(where, "must be a string or a list of text blocks")
    texts = []
    for i, b in enumerate(v):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise f.bad(f"{where}[{i}]", "must be {'type': 'text', 'text': ...}")
        texts.append(b["text"])
    return "\n\n".join(texts)


def _image(b: dict[str, Any], where: str) -> Image:
    src = b.get("source")
    if not isinstance(src, dict):
        raise f.bad(f"{where}.source", "must be {'type': 'base64', 'media_type', 'data'}")
    if src.get("type") != "base64":
        raise f.bad(f"{where}.source", "image URLs and files are not supported: send the image itself, base64-encoded")
    data = src.get("data")
    if not isinstance(data, str):
        raise f.bad(f"{where}.source.data", "must be a base64 string")
    return media.decode(f.b64(data, f"{where}.source.data"), where)


def _tool_result(b: dict[str, Any], where: str, names: dict[str, str]) -> Message:
    """A `tool_result` block as rk's tool message: its text (blocks joined), images, and the call it answers."""
    call_id = b.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise f.bad(f"{where}.tool_use_id", "is required")
    content = b.get("content")
    text, images = "", ()
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts, imgs = [], []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image":
                imgs.append(_image(part, f"{where}.content[{j}]"))
            else:
                raise f.bad(f"{where}.content[{j}]", "must be a text or image block")
        text, images = "\n".join(texts), tuple(imgs)
    elif content is not None:
        raise f.bad(f"{where}.content", "must be a string or a list of blocks")
    if b.get("is_error") is True:
        text = "Error: " + text
    return Message("tool", text, images=images, tool_call_id=call_id, tool_name=names.get(call_id))


def _turn(m: Any, where: str, names: dict[str, str]) -> list[Message]:
    """One wire message as rk messages: a user turn's tool results come first (one tool message each), then its
    text; an assistant turn keeps its thinking, text and calls together."""
    if not isinstance(m, dict):
        raise f.bad(where, "must be an object with 'role' and 'content'")
    role = m.get("role")
    content = m.get("content")
    if role == "system":
        return [Message("system", _text_blocks(content, f"{where}.content"))]
    if role not in ("user", "assistant"):
        raise f.bad(f"{where}.role", "must be user, assistant or system")
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list):
        raise f.bad(f"{where}.content", "must be a string or a list of content blocks")
    blocks = _Blocks()
    for i, b in enumerate(content):
        blocks.add(b, f"{where}.content[{i}]", names)
    text = "".join(blocks.texts)
    if role == "assistant":
        return [Message("assistant", text, tool_calls=tuple(blocks.calls), thinking="".join(blocks.thinking) or None)]
    rest = [Message("user", text, images=tuple(blocks.images))] if text or blocks.images else []
    return blocks.results + rest


@dataclass
class _Blocks:
    """A turn's content blocks, sorted by kind as they are read."""

    texts: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    results: list[Message] = field(default_factory=list)

    def add(self, b: Any, at: str, names: dict[str, str]) -> None:
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text" and isinstance(b.get("text"), str):
            self.texts.append(b["text"])
        elif kind == "image":
            self.images.append(_image(b, at))
        elif kind == "thinking" and isinstance(b.get("thinking"), str):
            self.thinking.append(b["thinking"])
        elif kind == "tool_use":
            self.calls.append(_tool_use(b, at, names))
        elif kind == "tool_result":
            self.results.append(_tool_result(b, at, names))
        elif kind in ("redacted_thinking", "document", "search_result", "server_tool_use", "web_search_tool_result"):
            log.info("%s: a %s block is not something rk can use; skipped", at, kind)
        else:
            raise f.bad(at, "must be a text, image, tool_use, tool_result or thinking block")


def _tool_use(b: dict[str, Any], at: str, names: dict[str, str]) -> ToolCall:
    """An assistant's tool call; its id is remembered so the matching result can name the tool."""
    name, call_id, args = b.get("name"), b.get("id"), b.get("input", {})
    if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
        raise f.bad(at, "a tool_use block needs an 'id' and a 'name'")
    if not isinstance(args, dict):
        raise f.bad(f"{at}.input", "must be a JSON object")
    names[call_id] = name
    return ToolCall(name, args, call_id)

def _tools(d: dict[str, Any]) -> tuple[Tool, ...]:
    """Client tools (`name`, `description`, `input_schema`); server tools rk cannot run (web search, code
    execution, Anthropic's versioned bash/editor) are dropped and logged, not refused."""
    v = d.get("tools")
    if v is None:
        return ()
    if not isinstance(v, list):
        raise f.bad("tools", "must be a list of tools")
    out = []
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            raise f.bad(f"tools[{i}]", "must be an object")
        kind = t.get("type")
        if kind not in (None, "custom"):
            log.info("tools[%d]: %r is a server tool rk cannot run; dropped", i, kind)
            continue
        out.append(f.flat_tool(t, f"tools[{i}]", "input_schema"))
    return tuple(out)


def _tool_choice(d: dict[str, Any], names: set[str]) -> str:
    """auto / any / tool / none onto rk's auto / required / the function's name / none."""
    v = d.get("tool_choice")
    if v is None:
        return "auto"
    kind = v.get("type") if isinstance(v, dict) else None
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    if kind == "tool":
        return f.tool_named(v.get("name"), names, "tool_choice.name")
    raise f.bad("tool_choice", "must be {'type': 'auto' | 'any' | 'tool' | 'none'}")


def _think(d: dict[str, Any]) -> Think:
    """`thinking` enabled / disabled / adaptive; the level is `output_config.effort` when given."""
    cfg = d.get("output_config")
    effort = cfg.get("effort") if isinstance(cfg, dict) else None
    if effort is not None and effort not in EFFORTS:
        raise f.bad("output_config.effort", "must be low, medium, high, xhigh or max")
    v = d.get("thinking")
    if v is None:
        return None
    kind = v.get("type") if isinstance(v, dict) else None
    if kind == "disabled":
        return False
    if kind in ("enabled", "adaptive"):
        return EFFORTS[effort] if effort is not None else True
    raise f.bad("thinking", "must be {'type': 'enabled' | 'disabled' | 'adaptive'}")


def _format(d: dict[str, Any]) -> Format:
    """Structured outputs: `output_config.format` (or the beta's `output_format`), `{type: "json_schema", schema}`."""
    cfg = d.get("output_config")
    v = cfg.get("format") if isinstance(cfg, dict) and cfg.get("format") is not None else d.get("output_format")
    if v is None:
        return None
    schema = v.get("schema") if isinstance(v, dict) and v.get("type") == "json_schema" else None
    if not isinstance(schema, dict):
        raise f.bad("output_config.format", "must be {'type': 'json_schema', 'schema': {...}}")
    return schema


def parse_messages(body: Any, peer: str, manifest: Manifest | None, *, count: bool = False) -> MessagesRequest:
    """`POST /v1/messages` (or `/count_tokens` with `count`). `manifest` is the model's, when known: thinking
    asked of a model that cannot think is relaxed to none."""
    d = f.obj(body)
    model = f.string(d, "model", required=True)
    assert model is not None
    if not count and f.integer(d, "max_tokens", lo=1) is None:
        raise f.bad("max_tokens", "is required")  # asking for more than the context leaves is fine: it is clamped
    raw = d.get("messages")
    if not isinstance(raw, list) or not raw:
        raise f.bad("messages", "must be a non-empty list of messages")
    names: dict[str, str] = {}
    msgs = [m for i, x in enumerate(raw) for m in _turn(x, f"messages[{i}]", names)]
    if d.get("system") is not None:
        msgs.insert(0, Message("system", _text_blocks(d["system"], "system")))
    media.check_count(sum(len(m.images) for m in msgs), "messages")
    tools = _tools(d)
    think = _think(d)
    if think not in (None, False) and manifest is not None and not manifest.can("thinking"):
        think = None  # Claude Code always asks; a model that cannot think answers without
    opts = dataclasses.replace(f.gen_options(d), stop=f.stop_list(d, "stop_sequences"))
    spec = GenSpec(messages=f.system_first(tuple(msgs)), options=opts, tools=tools,
                   tool_choice=_tool_choice(d, {t.name for t in tools}), think=think, format=_format(d),
                   count_only=count)
    return MessagesRequest(ChatJob(model=model, spec=spec, source="anthropic", peer=peer), model,
                           f.boolean(d, "stream", False))


# ---- replies -----------------------------------------------------------------------------------


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def stop_reason(stats: JobStats, called: bool) -> str:
    """The one place rk's end of a reply becomes Anthropic's `stop_reason`."""
    if called:
        return "tool_use"
    if stats.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if stats.stop_sequence else "end_turn"


def usage(stats: JobStats) -> dict[str, Any]:
    """Anthropic counts cached input apart from the input computed now."""
    return {"input_tokens": stats.prompt_tokens - stats.cached_tokens, "output_tokens": stats.generate_tokens,
            "cache_read_input_tokens": stats.cached_tokens, "cache_creation_input_tokens": 0}


def signature(thinking: str) -> str:
    """A thinking block's `signature`: the SDKs expect one; rk's is a digest of the text (not a secret)."""
    return "rk-" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def tool_use(c: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": c.id or "toolu_" + uuid.uuid4().hex[:24], "name": c.name, "input": c.arguments}


def message(msg_id: str, model: str, gen: Generated) -> dict[str, Any]:
    """The non-streaming reply: thinking, text, then tool calls."""
    content: list[dict[str, Any]] = []
    if gen.thinking:
        content.append({"type": "thinking", "thinking": gen.thinking, "signature": signature(gen.thinking)})
    if gen.text or not gen.tool_calls:
        content.append({"type": "text", "text": gen.text})
    content += [tool_use(c) for c in gen.tool_calls]
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(gen.stats, bool(gen.tool_calls)), "stop_sequence": gen.stats.stop_sequence,
            "usage": usage(gen.stats)}


def count(stats: JobStats) -> dict[str, Any]:
    return {"input_tokens": stats.prompt_tokens}


Event = tuple[str, dict[str, Any]]


@dataclass
class MessageStream:
    """The stream's events for one reply: `message_start`, one block per kind of output (opened on its first
    piece, closed when another kind begins), `message_delta` with the stop reason and usage, `message_stop`."""

    model: str
    id: str = field(default_factory=message_id)
    index: int = -1
    open: str | None = None  # the kind of the block being written: "text" or "thinking"
    thought: list[str] = field(default_factory=list)

    def start(self) -> list[Event]:
        """`message_start` and a first `ping`, sent as soon as the job is accepted."""
        msg: dict[str, Any] = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
               "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": msg}), *self.keepalive()]

    @staticmethod
    def keepalive() -> list[Event]:
        return [("ping", {"type": "ping"})]

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        out: list[Event] = []
        if self.open == "thinking":
            sig = signature("".join(self.thought))
            out.append(("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                "delta": {"type": "signature_delta", "signature": sig}}))
        self.open, self.thought = None, []
        return out + [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _block(self, block: dict[str, Any]) -> list[Event]:
        out = self._close()
        self.index += 1
        return out + [("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": block})]

    def _delta(self, kind: str, delta: dict[str, Any], block: dict[str, Any]) -> list[Event]:
        out = [] if self.open == kind else self._block(block)
        self.open = kind
        return out + [("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})]

    def text(self, t: str) -> list[Event]:
        return self._delta("text", {"type": "text_delta", "text": t}, {"type": "text", "text": ""})

    def thinking(self, t: str) -> list[Event]:
        self.thought.append(t)
        return self._delta("thinking", {"type": "thinking_delta", "thinking": t},
                           {"type": "thinking", "thinking": "", "signature": ""})

    def tool_call(self, c: ToolCall) -> list[Event]:
        block = tool_use(c) | {"input": {}}
        out = self._block(block)
        delta = {"type": "input_json_delta", "partial_json": orjson.dumps(c.arguments).decode()}
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))
        return out + [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def done(self, stats: JobStats, called: bool) -> list[Event]:
        delta = {"stop_reason": stop_reason(stats, called), "stop_sequence": stats.stop_sequence}
        return self._close() + [
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage(stats)}),
            ("message_stop", {"type": "message_stop"})]

    @staticmethod
    def error(e: RkError) -> list[Event]:
        return [("error", error(STATUSES.get(e.code, e.status), e.message, e.code, e.param))]


def error(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}}`, the type chosen by status as Anthropic's API does."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
