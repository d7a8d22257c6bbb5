"""OpenAI `/v1/*` wire format: request JSON -> jobs, job output -> OpenAI objects, chunks and errors.

Pure translation: nothing here queues, loads or runs anything. The field rules follow
shared/reference/api-compat.md section 2 (what openai-python, LangChain and LiteLLM rely on).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import orjson

from rk.daemon import media
from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.jobs import ChatJob, EmbedJob, Format, Generated, GenOptions, GenSpec, JobStats, Message, Think, ToolCall
from rk.daemon.media import Image
from rk.daemon.store.models import Manifest
from rk.daemon.vectors import b64_float32

TOKEN_ARRAYS = ("token-id arrays are not accepted: their ids belong to the client's tokenizer (tiktoken), not "
                "this model's. Send text instead; with langchain-openai OpenAIEmbeddings set "
                "check_embedding_ctx_length=False")


@dataclass(frozen=True)
class GenRequest:
    """A chat or text completion request: the job plus how the client wants the reply."""

    job: ChatJob
    model: str  # as the client named it, echoed in every reply
    stream: bool = False
    include_usage: bool = False
    echo: str = ""  # completions with echo=true: the prompt, sent before the generated text


@dataclass(frozen=True)
class EmbedRequest:
    job: EmbedJob
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


@dataclass(frozen=True)
class Reply:
    """The identity every chunk of one completion shares: same `id`, same `created`."""

    id: str
    created: int
    model: str
    chat: bool

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"


def new_reply(model: str, *, chat: bool) -> Reply:
    prefix = "chatcmpl-" if chat else "cmpl-"
    return Reply(prefix + uuid.uuid4().hex[:24], int(time.time()), model, chat)


# ---- requests ----------------------------------------------------------------------------------


def message(m: Any, where: str) -> Message:
    """One chat-completions message: `developer` is OpenAI's newer name for `system`; content is a string or
    text and `image_url` parts; tool calls carry their arguments as a JSON string; a tool result names its
    call (`tool_call_id`) and may name the function (`name`); reasoning comes back as `reasoning_content`."""
    role = f.role(m, where, {"developer": "system"})
    content, attached = _content(m.get("content"), f"{where}.content")
    thinking = next((m[k] for k in ("reasoning_content", "reasoning") if isinstance(m.get(k), str)), None)
    return Message(
        role=role, content=content, images=attached,
        tool_calls=f.tool_calls(m.get("tool_calls"), f"{where}.tool_calls"),
        tool_call_id=f.string(m, "tool_call_id"),
        tool_name=f.string(m, "name") if role == "tool" else None,
        thinking=thinking or None,
    )


def _content(v: Any, where: str) -> tuple[str, tuple[Image, ...]]:
    """A message's text, and the images of OpenAI content-part arrays."""
    if v is None:
        return "", ()
    if isinstance(v, str):
        return v, ()
    if not isinstance(v, list):
        raise f.bad(where, "must be a string or a list of content parts")
    texts, images = [], []
    for k, part in enumerate(v):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), (dict, str)):
            url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
            images.append(media.decode(f.b64(str(url), f"{where}[{k}]"), f"{where}[{k}]"))
        else:
            raise f.bad(where, "parts must be {'type':'text','text':...} or {'type':'image_url','image_url':{'url':...}}")
    return "".join(texts), tuple(images)




def _common(d: dict[str, Any], max_keys: tuple[str, ...]) -> tuple[str, GenOptions, bool, bool]:
    """What chat and completions share: model, options, stream flags. Unset sampling options stay unset: the
    model's Modelfile and then its engine decide them, as on every API (see `resolve.py`)."""
    model = f.string(d, "model", required=True)
    assert model is not None
    n = f.integer(d, "n", lo=1)
    if n not in (None, 1):
        raise f.bad("n", "must be 1: this server returns one choice per request")
    if f.integer(d, "best_of", lo=1) not in (None, 1):
        raise f.bad("best_of", "must be 1: this server returns one choice per request")
    if d.get("logprobs") not in (None, False, 0):
        raise f.bad("logprobs", "is not supported by this server")
    opts = f.gen_options(d, max_tokens_keys=max_keys)
    stream = f.boolean(d, "stream", False)
    so = f.obj({} if d.get("stream_options") is None else d["stream_options"], "stream_options")
    include_usage = stream and f.boolean(so, "include_usage", False)
    return model, opts, stream, include_usage


def tool_choice(d: dict[str, Any], names: set[str]) -> str:
    """"auto" (the default), "none", "required", or the name of the one function the model must call."""
    v = d.get("tool_choice")
    if v is None:
        return "auto"
    if v in ("auto", "none", "required"):
        return str(v)
    fn = v.get("function") if isinstance(v, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise f.bad("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}')
    if name not in names:
        raise f.bad("tool_choice", f"names {name!r}, which is not one of the request's tools")
    return name


def reasoning(d: dict[str, Any]) -> Think:
    """`reasoning_effort` or `reasoning.effort`: "none" turns thinking off; "minimal" counts as "low"."""
    effort = d.get("reasoning_effort")
    nested = d.get("reasoning")
    if effort is None and isinstance(nested, dict):
        effort = nested.get("effort")
    if effort is None:
        return None
    levels = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high"}
    if effort not in levels:
        raise f.bad("reasoning_effort", "must be none, minimal, low, medium or high")
    return levels[effort]


def response_format(d: dict[str, Any]) -> Format:
    """`response_format`: text, json_object, or json_schema with its `schema` under `json_schema`."""
    return format_object(d.get("response_format"), "response_format")


def format_object(v: Any, key: str) -> Format:
    """An OpenAI format object, chat's or Responses': text, json_object, or json_schema with its schema (under
    `json_schema` in chat, beside the type in Responses)."""
    if v is None:
        return None
    kind = v.get("type") if isinstance(v, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        assert isinstance(v, dict)
        js = v.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else v.get("schema")
        if not isinstance(schema, dict):
            raise f.bad(f"{key}.json_schema.schema" if isinstance(js, dict) else f"{key}.schema",
                        "must be a JSON schema object")
        return schema
    raise f.bad(key, "type must be text, json_object or json_schema")


def parse_chat(body: Any, peer: str) -> GenRequest:
    """`POST /v1/chat/completions`; `max_completion_tokens` wins over the older `max_tokens`."""
    d = f.obj(body)
    model, opts, stream, usage = _common(d, ("max_completion_tokens", "max_tokens"))
    tools = f.tools(d)
    spec = GenSpec(messages=f.messages(d, message), options=opts, tools=tools,
                   tool_choice=tool_choice(d, {t.name for t in tools}),
                   parallel_tool_calls=f.boolean(d, "parallel_tool_calls", True), think=reasoning(d), format=response_format(d))
    return GenRequest(ChatJob(model=model, spec=spec, source="openai", peer=peer), model, stream, usage)


def parse_completion(body: Any, peer: str) -> GenRequest:
    """`POST /v1/completions`: the prompt is continued as raw text, no chat template.

    `max_tokens` absent means the model's own default, not OpenAI's 16 (as local servers do).
    """
    d = f.obj(body)
    model, opts, stream, usage = _common(d, ("max_tokens",))
    prompt = d.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and any(isinstance(p, (int, list)) for p in prompt):
        raise f.bad("prompt", TOKEN_ARRAYS)
    if not isinstance(prompt, str):
        raise f.bad("prompt", "must be a string (one prompt per request)")
    if d.get("suffix"):
        raise f.bad("suffix", "is not supported: this server does no fill-in-the-middle")
    job = ChatJob(model=model, spec=GenSpec(prompt=prompt, raw=True, options=opts), source="openai", peer=peer)
    return GenRequest(job, model, stream, usage, echo=prompt if f.boolean(d, "echo", False) else "")


def parse_embeddings(body: Any, peer: str) -> EmbedRequest:
    """`POST /v1/embeddings`: text input only; token arrays get a 400 that says what to change."""
    d = f.obj(body)
    model = f.string(d, "model", required=True)
    assert model is not None
    raw = d.get("input")
    if raw is None:
        raise f.bad("input", "is required")
    if isinstance(raw, list) and any(isinstance(x, (int, list)) and not isinstance(x, bool) for x in raw):
        raise f.bad("input", TOKEN_ARRAYS)
    texts = f.texts(raw)
    if not texts:
        raise f.bad("input", "must not be an empty list")
    fmt = f.string(d, "encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise f.bad("encoding_format", "must be 'float' or 'base64'")
    job = EmbedJob(model=model, texts=texts, source="openai", peer=peer)
    return EmbedRequest(job, model, fmt, f.integer(d, "dimensions", lo=1))  # type: ignore[arg-type]


# ---- replies -----------------------------------------------------------------------------------


def usage(stats: JobStats) -> dict[str, Any]:
    """The whole prompt counts, cached or not; the cached part is reported apart, as OpenAI does, and so is
    the reasoning within the completion."""
    prompt, completion = stats.prompt_tokens, stats.generate_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": stats.thinking_tokens}}


def finish_reason(stats: JobStats, called: bool = False) -> str:
    if called:
        return "tool_calls"
    return "length" if stats.finish_reason == "length" else "stop"


def tool_call(c: ToolCall, index: int | None = None) -> dict[str, Any]:
    """A call as OpenAI sends it: arguments as a JSON string; streamed deltas carry their `index`."""
    out: dict[str, Any] = {} if index is None else {"index": index}
    return out | {"id": c.id, "type": "function",
                  "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()}}


def completion(r: Reply, gen: Generated, echo: str = "") -> dict[str, Any]:
    """The non-streaming reply; reasoning goes out as both `reasoning_content` and `reasoning`."""
    choice: dict[str, Any] = {"index": 0}
    if r.chat:
        msg: dict[str, Any] = {"role": "assistant", "content": gen.text or (None if gen.tool_calls else "")}
        if gen.thinking:
            msg["reasoning_content"] = msg["reasoning"] = gen.thinking
        if gen.tool_calls:
            msg["tool_calls"] = [tool_call(c) for c in gen.tool_calls]
        choice["message"] = msg
    else:
        choice["text"] = echo + gen.text
    choice |= {"logprobs": None, "finish_reason": finish_reason(gen.stats, bool(gen.tool_calls))}
    return {"id": r.id, "object": r.object, "created": r.created, "model": r.model, "choices": [choice],
            "usage": usage(gen.stats)}


def chunk(r: Reply, text: str | None, *, first: bool = False, finish: str | None = None,
          include_usage: bool = False, thinking: str | None = None, call: dict[str, Any] | None = None) -> dict[str, Any]:
    """One streamed chunk. Chat: the first carries only the role, the last an empty delta and the reason."""
    choice: dict[str, Any] = {"index": 0}
    if r.chat:
        if first:
            choice["delta"] = {"role": "assistant", "content": ""}
        elif thinking is not None:
            choice["delta"] = {"reasoning_content": thinking, "reasoning": thinking}
        elif call is not None:
            choice["delta"] = {"tool_calls": [call]}
        else:
            choice["delta"] = {} if text is None else {"content": text}
    else:
        choice["text"] = text or ""
    choice |= {"logprobs": None, "finish_reason": finish}
    out: dict[str, Any] = {"id": r.id, "object": r.object + ".chunk" if r.chat else r.object,
                           "created": r.created, "model": r.model, "choices": [choice]}
    if include_usage:
        out["usage"] = None
    return out


def usage_chunk(r: Reply, stats: JobStats) -> dict[str, Any]:
    """Sent only when `stream_options.include_usage` asked: `choices` is an empty list, never null."""
    return {"id": r.id, "object": r.object + ".chunk" if r.chat else r.object, "created": r.created,
            "model": r.model, "choices": [], "usage": usage(stats)}


def embeddings(req: EmbedRequest, matrix: np.ndarray, prompt_tokens: int) -> dict[str, Any]:
    """Floats go out as float64 renderings of the float32 values, so float and base64 decode identically."""
    def enc(row: np.ndarray) -> Any:
        return b64_float32(row) if req.encoding_format == "base64" else row.astype(np.float64)

    data = [{"object": "embedding", "index": i, "embedding": enc(row)} for i, row in enumerate(matrix)]
    return {"object": "list", "data": data, "model": req.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def model_object(m: Manifest, modified_at: str) -> dict[str, Any]:
    """A `/v1/models` entry; ids are the same names `/api/tags` lists. Anthropic's fields ride along (`type`,
    `display_name`, `created_at`): the one route serves both SDKs and Claude Code's model discovery."""
    try:
        stamp = datetime.fromisoformat(modified_at.replace("Z", "+00:00"))
    except ValueError:
        stamp = datetime.fromtimestamp(0, timezone.utc)
    return {"id": m.name, "object": "model", "created": int(stamp.timestamp()), "owned_by": "library",
            "type": "model", "display_name": m.name, "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}


def model_list(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's list, with Anthropic's paging fields (rk lists every model on one page)."""
    return {"object": "list", "data": entries, "has_more": False,
            "first_id": entries[0]["id"] if entries else None, "last_id": entries[-1]["id"] if entries else None}


def error(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}` with all four keys always present."""
    if code == "unauthorized":
        code = "invalid_api_key"
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def rk_error(e: RkError) -> dict[str, Any]:
    return error(e.status, e.message, e.code, e.param)
