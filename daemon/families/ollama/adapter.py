"""Ollama `/api/*` wire format: request JSON -> jobs, job output -> NDJSON chunks and replies, errors.

Pure translation: nothing here queues, loads or runs anything. The field rules follow
shared/reference/api-compat.md section 1 (what ollama-python, Open WebUI, LiteLLM and Continue rely on).
Durations are integer nanoseconds; timestamps are RFC 3339.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

from rk.daemon import media
from rk.daemon.backend_info import backend_info
from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.gotemplate import check as check_template
from rk.daemon.jobs import (
    ChatJob,
    EmbedJob,
    Format,
    Generated,
    GenOptions,
    GenSpec,
    JobStats,
    Message,
    ModelAction,
    Think,
    ToolCall,
)
from rk.daemon.media import Image
from rk.daemon.store import modelfile
from rk.daemon.store.models import Manifest

# The Ollama API level this server speaks; clients gate features on it, so it must parse as dotted ints.
OLLAMA_VERSION = "0.14.0"  # /v1/responses (0.13.3) and /v1/messages (0.14.0); codex --oss needs >= 0.13.4
EMPTY_LEGACY = "empty input parameter; embeddings require non-empty text"
FOREVER = "9999-12-31T23:59:59Z"  # expires_at of a model pinned with a negative keep_alive
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_OLLAMA_NAMES = {"max_tokens": "num_predict"}  # GenOptions field -> Ollama option name, where they differ


@dataclass(frozen=True)
class GenRequest:
    """`/api/generate` or `/api/chat`: a generation, or a load/unload when there is nothing to generate."""

    job: ChatJob | ModelAction
    model: str  # as the client named it, echoed in every chunk
    chat: bool
    stream: bool = True


@dataclass(frozen=True)
class EmbedRequest:
    job: EmbedJob | ModelAction  # no input at all loads the model
    model: str
    dimensions: int | None = None


# ---- requests ----------------------------------------------------------------------------------


def message(m: Any, where: str) -> Message:
    """One `/api/chat` message (also the line protocol's): text content, base64 `images`, tool calls with
    object arguments, a tool result's `tool_name` or `tool_call_id`, the reasoning as `thinking`."""
    role = f.role(m, where)
    content, thinking = m.get("content"), m.get("thinking")
    if content is not None and not isinstance(content, str):
        raise f.bad(f"{where}.content", "must be a string")
    return Message(
        role=role, content=content or "", images=images(m.get("images"), f"{where}.images"),
        tool_calls=f.tool_calls(m.get("tool_calls"), f"{where}.tool_calls"),
        tool_call_id=f.string(m, "tool_call_id"), tool_name=f.string(m, "tool_name"),
        thinking=thinking if isinstance(thinking, str) and thinking else None,
    )


def images(v: Any, where: str) -> tuple[Image, ...]:
    """Ollama's `images`: base64 strings (a data URL's prefix is tolerated), each decoded now."""
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise f.bad(where, "must be a list of base64-encoded images")
    media.check_count(len(v), where)
    return tuple(media.decode(f.b64(x, f"{where}[{j}]"), f"{where}[{j}]") for j, x in enumerate(v))


def think(v: Any, key: str = "think") -> Think:
    """Ollama's `think`: true, false, or an effort level."""
    if v is None or isinstance(v, bool):
        return v
    if v in ("low", "medium", "high"):
        return v
    raise f.bad(key, 'must be true, false, "low", "medium" or "high"')


def json_format(v: Any, key: str = "format") -> Format:
    """Ollama's `format`: "json" or a JSON schema object; "" and null mean free text."""
    if v is None or v == "":
        return None
    if v == "json" or isinstance(v, dict):
        return v
    raise f.bad(key, 'must be "json" or a JSON schema object')




def model_name(d: dict[str, Any]) -> str:
    """`model`, or the deprecated `name` that Continue, LiteLLM and older scripts still send."""
    name = f.string(d, "model") or f.string(d, "name")
    if not name:
        raise f.bad("model", "is required")
    return name


def keep_alive(v: Any) -> float | None:
    """Seconds from a Go duration string ("5m", "1h30m", "-1m") or a number of seconds; negative = forever.

    Only finite values: "nan" or "inf" would pin a model that can never expire (and break /api/ps).
    """
    seconds = _seconds(v)
    if seconds is not None and not math.isfinite(seconds):
        raise f.bad("keep_alive", "must be a finite duration (a negative one keeps the model loaded forever)")
    return seconds


def _seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        sign = -1.0 if s.startswith("-") else 1.0
        s = s.lstrip("+-")
        try:
            return sign * float(s)
        except ValueError:
            pass
        parts = _DURATION.findall(s)
        if parts and "".join(n + u for n, u in parts) == s:
            return sign * sum(float(n) * _UNIT_S[u] for n, u in parts)
    raise f.bad("keep_alive", 'must be a duration like "5m" or "1h30m", or a number of seconds')


def options(d: dict[str, Any]) -> GenOptions:
    """`options`, ignoring unknown and null keys (langchain and LiteLLM send both); num_predict < 0 = no limit."""
    raw = f.obj({} if d.get("options") is None else d["options"], "options")
    return f.gen_options({k: v for k, v in raw.items() if v is not None}, max_tokens_keys=("num_predict",))


def _action(model: str, ka: float | None, peer: str) -> ModelAction:
    return ModelAction(model=model, action="unload" if ka == 0 else "load", keep_alive_s=ka, source="ollama", peer=peer)


def parse_generate(body: Any, peer: str) -> GenRequest:
    """`POST /api/generate`; no prompt means load (or unload with keep_alive 0), answered as one object."""
    d = f.obj(body)
    model = model_name(d)
    prompt = f.string(d, "prompt") or ""
    system = f.string(d, "system")
    raw = f.boolean(d, "raw", False)
    if raw and (system or d.get("template") or d.get("context")):
        raise f.bad("raw", "cannot be combined with template, system or context")
    for key, why in (("template", "the model's own chat template is used"), ("suffix", "this server does no fill-in-the-middle")):
        if d.get(key):
            raise f.bad(key, f"is not supported: {why}")
    ka = keep_alive(d.get("keep_alive"))
    stream = f.boolean(d, "stream", True)
    if not prompt and not system:
        return GenRequest(_action(model, ka, peer), model, chat=False, stream=False)
    common = dict(options=options(d), think=think(d.get("think")), format=json_format(d.get("format")))
    if raw:
        spec = GenSpec(prompt=prompt, raw=True, **common)
    else:
        msgs = (Message("system", system),) if system else ()
        user = Message("user", prompt, images=images(d.get("images"), "images"))
        spec = GenSpec(messages=msgs + (user,), **common)
    job = ChatJob(model=model, spec=spec, keep_alive_s=ka, source="ollama", peer=peer)
    return GenRequest(job, model, chat=False, stream=stream)


def parse_chat(body: Any, peer: str) -> GenRequest:
    """`POST /api/chat`; `messages: []` loads (or unloads with keep_alive 0)."""
    d = f.obj(body)
    model = model_name(d)
    msgs = f.messages(d, message, allow_empty=True)
    ka = keep_alive(d.get("keep_alive"))
    if not msgs:
        return GenRequest(_action(model, ka, peer), model, chat=True, stream=False)
    spec = GenSpec(messages=msgs, options=options(d), tools=f.tools(d), think=think(d.get("think")),
                   format=json_format(d.get("format")))
    job = ChatJob(model=model, spec=spec, keep_alive_s=ka, source="ollama", peer=peer)
    return GenRequest(job, model, chat=True, stream=f.boolean(d, "stream", True))


def parse_embed(body: Any, peer: str) -> EmbedRequest:
    """`POST /api/embed`: a string or a list of strings; no input (or "") just loads the model."""
    d = f.obj(body)
    model = model_name(d)
    ka = keep_alive(d.get("keep_alive"))
    raw = d.get("input")
    if raw is None or raw == "" or raw == []:
        return EmbedRequest(_action(model, ka, peer), model)
    if not isinstance(raw, (str, list)) or (isinstance(raw, list) and not all(isinstance(s, str) for s in raw)):
        raise RkError("bad_request", "invalid input type", param="input")
    job = EmbedJob(model=model, texts=f.texts(raw), truncate=f.boolean(d, "truncate", True), keep_alive_s=ka,
                   source="ollama", peer=peer)
    return EmbedRequest(job, model, f.integer(d, "dimensions", lo=1))


def parse_legacy_embeddings(body: Any, peer: str) -> EmbedRequest:
    """`POST /api/embeddings`: one text in `prompt`, or in `input`; empty text is a 400, never `[]`."""
    d = f.obj(body)
    model = model_name(d)
    text = d.get("prompt") or d.get("input")
    if text is not None and not isinstance(text, str):
        raise f.bad("prompt", "must be a string")
    if not text or not text.strip():
        raise RkError("empty_input", EMPTY_LEGACY, param="prompt")
    return EmbedRequest(EmbedJob(model=model, texts=(text,), keep_alive_s=keep_alive(d.get("keep_alive")),
                                 source="ollama", peer=peer), model)


def parse_copy(body: Any) -> tuple[str, str]:
    d = f.obj(body)
    src, dst = f.string(d, "source", required=True), f.string(d, "destination", required=True)
    assert src is not None and dst is not None
    return src, dst


def _create_messages(v: Any) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(
            isinstance(m, dict) and m.get("role") in modelfile.ROLES and isinstance(m.get("content"), str) for m in v):
        raise f.bad("messages", f"must be a list of {{role, content}} with role one of {', '.join(modelfile.ROLES)}")
    return tuple((m["role"], m["content"]) for m in v)


def parse_create(body: Any) -> modelfile.CreateSpec:
    """`/api/create`: the structured fields, and the legacy `modelfile` string older clients send.

    In a legacy Modelfile, FROM names a model or an uploaded blob (`@sha256:<hex>`): the daemon never
    reads a file path on a client's say-so."""
    d = f.obj(body)
    for key in ("adapters", "quantize"):
        if d.get(key):
            raise RkError("not_implemented", f"'{key}' is not supported by rk", param=key)
    name, stream = model_name(d), f.boolean(d, "stream", True)
    spec = modelfile.CreateSpec(name, stream=stream)
    if f.string(d, "modelfile"):
        spec, source = modelfile.parse(d["modelfile"], name, stream)
        if source.startswith("@"):
            spec = replace(spec, files=(("model", modelfile.digest_hex(source[1:], "modelfile")),))
        elif modelfile.is_path(source):
            raise RkError("bad_request", f"FROM {source}: a file path cannot be read by the daemon; upload it with "
                          "POST /api/blobs/sha256:<hex> and create with 'files' (rk create -f does this)", param="modelfile")
        else:
            spec = replace(spec, base=source)
    files = f.obj({} if d.get("files") is None else d["files"], "files")
    params = f.obj({} if d.get("parameters") is None else d["parameters"], "parameters")
    license_ = d.get("license")
    if isinstance(license_, list) and all(isinstance(x, str) for x in license_):
        license_ = "\n".join(license_)
    spec = replace(
        spec,
        base=f.string(d, "from") or spec.base,
        files=tuple((k, modelfile.digest_hex(v, f"files.{k}")) for k, v in files.items()) or spec.files,
        system=f.string(d, "system") if d.get("system") is not None else spec.system,
        template=f.string(d, "template") if d.get("template") is not None else spec.template,
        parameters=spec.parameters | {k: v for k, v in params.items() if v is not None},
        messages=_create_messages(d.get("messages")) or spec.messages,
        license=license_ if isinstance(license_, str) else spec.license,
    )
    if not spec.base and not spec.files:
        raise RkError("bad_request", "neither 'from' or 'files' was specified", param="from")
    if spec.base and spec.files:
        raise RkError("bad_request", "give 'from' or 'files', not both", param="from")
    if spec.template is not None:
        check_template(spec.template)  # a TEMPLATE rk cannot render is a 400 now, never ignored later
    # the parameters as manifest defaults (GenOptions fields); a malformed value is refused now, before anything is written
    return replace(spec, defaults=f.gen_options(spec.parameters, max_tokens_keys=("num_predict",)).set())


# ---- replies -----------------------------------------------------------------------------------


def timestamp(t: float | None = None) -> str:
    """RFC 3339 in UTC with a `Z`."""
    dt = datetime.now(timezone.utc) if t is None else datetime.fromtimestamp(t, timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


def _ns(ms: float) -> int:
    return int(round(ms * 1_000_000))


def tool_call(c: ToolCall, index: int) -> dict[str, Any]:
    """A call as Ollama sends it: arguments as an object."""
    return {"id": c.id, "function": {"index": index, "name": c.name, "arguments": c.arguments}}


def chunk(model: str, text: str, *, chat: bool, thinking: str = "", calls: tuple[ToolCall, ...] = (),
          first_index: int = 0) -> dict[str, Any]:
    """One streamed piece: chat chunks always carry `message.role`, generate chunks `response`; reasoning
    travels in `thinking`, apart from the answer, and each whole tool call in `message.tool_calls`."""
    out: dict[str, Any] = {"model": model, "created_at": timestamp()}
    if chat:
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            msg["thinking"] = thinking
        if calls:
            msg["tool_calls"] = [tool_call(c, first_index + i) for i, c in enumerate(calls)]
        out["message"] = msg
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    out["done"] = False
    return out


def final(model: str, stats: JobStats, *, chat: bool, gen: Generated | None = None) -> dict[str, Any]:
    """The one `done: true` chunk (or the whole `stream: false` reply) with the job's own figures.

    `done_reason` stays "stop" after tool calls, as Ollama's does.
    """
    out = chunk(model, gen.text, chat=chat, thinking=gen.thinking, calls=gen.tool_calls) if gen else chunk(model, "", chat=chat)
    out |= {"done": True, "done_reason": "length" if stats.finish_reason == "length" else "stop",
            "total_duration": _ns(stats.total_ms), "load_duration": _ns(stats.load_ms),
            "prompt_eval_count": stats.prompt_tokens, "prompt_eval_duration": _ns(stats.prefill_ms),
            "eval_count": stats.generate_tokens, "eval_duration": _ns(stats.generate_ms)}
    return out


def action_reply(model: str, action: str, *, chat: bool) -> dict[str, Any]:
    """Load or unload done: one object with `done_reason` "load" or "unload"."""
    out = chunk(model, "", chat=chat)
    out |= {"done": True, "done_reason": action}
    return out


def embed_reply(model: str, matrix: np.ndarray, stats: JobStats) -> dict[str, Any]:
    """`/api/embed`: unit-length vectors, always a list of lists, `prompt_eval_count` summed over inputs."""
    return {"model": model, "embeddings": matrix, "total_duration": _ns(stats.total_ms),
            "load_duration": _ns(stats.load_ms), "prompt_eval_count": stats.prompt_tokens}


def legacy_embedding(matrix: np.ndarray) -> dict[str, Any]:
    """`/api/embeddings`. Unlike Ollama's this vector is unit length: the backends only produce normalised ones."""
    return {"embedding": matrix[0]}


def tag(m: Manifest, modified_at: str) -> dict[str, Any]:
    """A `/api/tags` entry: `name` and `model` equal, integer `size`, bare hex `digest`."""
    return {"name": m.name, "model": m.name, "modified_at": modified_at, "size": m.size, "digest": m.digest,
            "details": m.details()}


def ps_entry(m: Manifest, memory_mb: float, expires: float, context_length: int) -> dict[str, Any]:
    """A loaded model for `/api/ps`; `size_vram` counts only memory on the NPU, `context_length` is the
    context it was loaded with (as Ollama reports it), not the model's trained one."""
    size = int(memory_mb * 1024 * 1024)
    info = backend_info(m.backend)
    on_accelerator = info is not None and info.accelerator
    return {"name": m.name, "model": m.name, "size": size, "digest": m.digest, "details": m.details(),
            "expires_at": FOREVER if math.isinf(expires) else timestamp(expires),
            "size_vram": size if on_accelerator else 0, "context_length": context_length}


def _parameter_count(size: str) -> int | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMBT])", size.strip().upper())
    return int(float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]) if m else None


def parameters(m: Manifest) -> list[tuple[str, str]]:
    """(Ollama option, value) pairs; strings are JSON-quoted, the way Continue parses them."""
    out = [("num_ctx", str(m.context_length))]
    for k, v in m.defaults.items():
        if k == "num_ctx":
            continue
        values = v if isinstance(v, (list, tuple)) else [v]
        out += [(_OLLAMA_NAMES.get(k, k), orjson.dumps(x).decode() if isinstance(x, str) else str(x)) for x in values]
    return out


def show(m: Manifest, modified_at: str) -> dict[str, Any]:
    """`/api/show`; `model_info` is required by ollama-python and names the context length for LiteLLM."""
    arch = m.family or m.backend
    info: dict[str, Any] = {"general.architecture": arch, f"{arch}.context_length": m.context_length}
    count = _parameter_count(m.parameter_size)
    if count is not None:
        info["general.parameter_count"] = count
    if not m.can("completion") and m.params.get("dim"):
        info[f"{arch}.embedding_length"] = int(m.params["dim"])
    params = parameters(m)
    modelfile = f"FROM {m.name}\n"
    if m.system:
        modelfile += f'SYSTEM """{m.system}"""\n'
    modelfile += "".join(f"PARAMETER {k} {v}\n" for k, v in params)
    out: dict[str, Any] = {
        "modelfile": modelfile, "parameters": "\n".join(f"{k:<30} {v}" for k, v in params),
        "template": m.template or "", "details": m.details(), "model_info": info,
        "capabilities": list(m.capabilities), "modified_at": modified_at,
    }
    if m.system:
        out["system"] = m.system
    return out


def version(rk_version: str) -> dict[str, str]:
    return {"version": OLLAMA_VERSION, "rk_version": rk_version}


def error(message: str) -> dict[str, str]:
    return {"error": message}
