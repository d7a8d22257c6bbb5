"""Typed reads of the wire JSON fields the API families share; every failure is a `bad_request` that names
the field. A shape only one family sends (Ollama's `images`, OpenAI's content parts) is read in its adapter."""
from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Callable

import orjson

from rk.daemon import media
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, Message, Role, Tool, ToolCall


def bad(field: str, what: str) -> RkError:
    return RkError("bad_request", f"'{field}' {what}", param=field)


def obj(body: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad(field, "must be a JSON object")
    return body


def string(d: dict[str, Any], key: str, *, required: bool = False, default: str | None = None) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise bad(key, "is required")
        return default
    if not isinstance(v, str):
        raise bad(key, "must be a string")
    return v


def number(d: dict[str, Any], key: str, *, lo: float | None = None, hi: float | None = None) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(key, "must be a number")
    if not math.isfinite(v):  # orjson reads 1e400 as inf; NaN compares false with every bound
        raise bad(key, "must be a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad(key, f"must be between {lo} and {hi}")
    return float(v)


def integer(d: dict[str, Any], key: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
        raise bad(key, "must be an integer")
    v = int(v)
    if not -(2**63) <= v < 2**63:  # 1e30 would pass is_integer() but cannot reach the runner (64-bit JSON ints)
        raise bad(key, "is out of range")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad(key, f"must be between {lo} and {hi}")
    return v


def boolean(d: dict[str, Any], key: str, default: bool) -> bool:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(key, "must be true or false")
    return v


MAX_STOPS, MAX_STOP_CHARS = 64, 512


def stop_list(d: dict[str, Any], key: str = "stop") -> tuple[str, ...]:
    """Stop strings, capped in count and length: every one is checked against each generated token."""
    v = d.get(key)
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad(key, "must be a string or a list of strings")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise bad(key, f"takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters")
    return tuple(dict.fromkeys(s for s in stops if s))


ROLES = ("system", "user", "assistant", "tool")


def b64(text: str, where: str) -> bytes:
    if text.startswith(("http://", "https://")):
        raise bad(where, "image URLs are not supported: send the image itself, base64-encoded")
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad(where, "is not valid base64") from None


def arguments(v: Any, where: str) -> dict[str, Any]:
    """Tool-call arguments: an object (Ollama) or a JSON string of one (OpenAI)."""
    if isinstance(v, str):
        try:
            v = orjson.loads(v) if v.strip() else {}
        except orjson.JSONDecodeError:
            raise bad(where, "must be a JSON object (as a string)") from None
    if not isinstance(v, dict):
        raise bad(where, "must be a JSON object")
    return v


def tool_calls(v: Any, where: str) -> tuple[ToolCall, ...]:
    """An assistant turn's calls, in either API's shape."""
    if v is None:
        return ()
    if not isinstance(v, list):
        raise bad(where, "must be a list of tool calls")
    out = []
    for i, c in enumerate(v):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad(f"{where}[{i}].function", "must be an object with a 'name'")
        call_id = c.get("id")
        out.append(ToolCall(fn["name"], arguments(fn.get("arguments"), f"{where}[{i}].function.arguments"),
                            call_id if isinstance(call_id, str) else ""))
    return tuple(out)


def role(m: Any, where: str, aliases: dict[str, str] | None = None) -> Role:
    """A message's role (after the family's aliases, e.g. OpenAI's `developer` for `system`)."""
    if not isinstance(m, dict):
        raise bad(where, "must be an object with 'role' and 'content'")
    r = m.get("role")
    r = (aliases or {}).get(r, r) if isinstance(r, str) else r
    if r not in ROLES:
        raise bad(f"{where}.role", f"must be one of {', '.join(ROLES)}")
    return r


def messages(d: dict[str, Any], read: Callable[[Any, str], Message], key: str = "messages", *,
             allow_empty: bool = False) -> tuple[Message, ...]:
    """A conversation, each message read in the family's own shape; the images of all of them are capped."""
    v = d.get(key)
    if v is None and allow_empty:
        return ()
    if not isinstance(v, list):
        raise bad(key, "must be a list of messages")
    if not v and not allow_empty:
        raise bad(key, "must not be empty")
    out = tuple(read(m, f"{key}[{i}]") for i, m in enumerate(v))
    media.check_count(sum(len(m.images) for m in out), key)
    return out


def system_first(msgs: tuple[Message, ...]) -> tuple[Message, ...]:
    """Every system message folded, in order, into one at the start: agents send more than one (Codex's
    developer messages, Claude Code's `system` turn after the first user turn), and many chat templates accept
    a system message only first (Qwen3's raises, others drop it). The fold is the same every turn, so an
    agent's next prompt still extends its last one."""
    system = [m.content for m in msgs if m.role == "system"]
    if len(system) < 2 and (not system or msgs[0].role == "system"):
        return msgs
    return (Message("system", "\n\n".join(system)),) + tuple(m for m in msgs if m.role != "system")


def tools(d: dict[str, Any], key: str = "tools") -> tuple[Tool, ...]:
    """`tools: [{type: "function", function: {name, description, parameters}}]`, as both APIs send them."""
    v = d.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise bad(key, "must be a list of tools")
    out = []
    for i, t in enumerate(v):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise bad(f"{key}[{i}]", "must be {'type': 'function', 'function': {'name', 'description', 'parameters'}}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"{key}[{i}].function.name", "is required")
        params = fn.get("parameters") or {}
        if not isinstance(params, dict):
            raise bad(f"{key}[{i}].function.parameters", "must be a JSON schema object")
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise bad(f"{key}[{i}].function.description", "must be a string")
        out.append(Tool(name, desc, params))
    return tuple(out)


def flat_tool(t: dict[str, Any], where: str, schema_key: str, prefix: str = "") -> Tool:
    """A tool described flat (`name`, `description` and its schema under `schema_key`), as Anthropic's
    `input_schema` and Responses' `parameters`; `prefix` namespaces its name."""
    name, desc, schema = t.get("name"), t.get("description") or "", t.get(schema_key) or {}
    if not isinstance(name, str) or not name:
        raise bad(f"{where}.name", "is required")
    if not isinstance(desc, str):
        raise bad(f"{where}.description", "must be a string")
    if not isinstance(schema, dict):
        raise bad(f"{where}.{schema_key}", "must be a JSON schema object")
    return Tool(prefix + name, desc, schema)


def tool_named(name: Any, names: set[str], key: str) -> str:
    """A `tool_choice` that names one function: it must be one of the request's tools."""
    if not isinstance(name, str) or name not in names:
        raise bad(key, "must name one of the request's tools")
    return name


# Bounds that keep every sampler's arithmetic finite, fp16 logits (the NPU) included: logits are
# divided by the temperature and by the repeat penalty, so neither may be tiny. Below
# MIN_TEMPERATURE sampling is already argmax in all but name (a logit gap of 0.1 is a factor of
# e^10), so such temperatures become 0, greedy, the limit they approach. A repeat penalty scales
# logits by at most 1/MIN_REPEAT_PENALTY = 100, which keeps |logits| < 655 inside fp16's 65504.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0
MIN_REPEAT_PENALTY = 0.01
MAX_REPEAT_PENALTY = 100.0


def temperature(o: dict[str, Any]) -> float | None:
    """0 (greedy) .. 100; positive values below MIN_TEMPERATURE are greedy too (see above)."""
    t = number(o, "temperature", lo=0, hi=MAX_TEMPERATURE)
    return 0.0 if t is not None and t < MIN_TEMPERATURE else t


def repeat_penalty(o: dict[str, Any]) -> float | None:
    """1 = off; 0 also means off (the hf sampler always read it so); else MIN..MAX_REPEAT_PENALTY."""
    p = number(o, "repeat_penalty", lo=0, hi=MAX_REPEAT_PENALTY)
    if p == 0:
        return 1.0
    if p is not None and p < MIN_REPEAT_PENALTY:
        raise bad("repeat_penalty", f"must be 0 (off) or between {MIN_REPEAT_PENALTY} and {MAX_REPEAT_PENALTY}: "
                  "smaller penalties overflow the logits")
    return p


def gen_options(o: dict[str, Any], *, max_tokens_keys: tuple[str, ...] = ("max_tokens",)) -> GenOptions:
    """The sampling options every API shares, read from one flat dict."""
    max_tokens = None
    for k in max_tokens_keys:
        v = integer(o, k)
        if v is not None:
            max_tokens = v
            break
    if max_tokens is not None and max_tokens < 0:
        max_tokens = None  # Ollama: -1 = no limit, -2 = fill the context
    return GenOptions(
        max_tokens=max_tokens,
        temperature=temperature(o),
        top_p=number(o, "top_p", lo=0, hi=1),
        top_k=integer(o, "top_k", lo=0),
        min_p=number(o, "min_p", lo=0, hi=1),
        seed=integer(o, "seed"),
        stop=stop_list(o),
        repeat_penalty=repeat_penalty(o),
        num_ctx=integer(o, "num_ctx", lo=1),
        cache_prompt=o["cache_prompt"] if isinstance(o.get("cache_prompt"), bool) else None,
    )


def texts(v: Any, key: str = "input") -> tuple[str, ...]:
    """A string or a list of strings to embed."""
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise bad(key, "must be a string or a list of strings")
