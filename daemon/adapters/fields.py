"""Typed reads of wire JSON fields; every failure is a `bad_request` that names the field."""
from __future__ import annotations

from typing import Any

from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions


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


def stop_list(d: dict[str, Any], key: str = "stop") -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(s for s in v if s)
    raise bad(key, "must be a string or a list of strings")


def messages(d: dict[str, Any], key: str = "messages", *, allow_empty: bool = False) -> tuple[dict[str, str], ...]:
    """Chat messages as (role, content) dicts; OpenAI content-part arrays keep their text parts."""
    v = d.get(key)
    if v is None and allow_empty:
        return ()
    if not isinstance(v, list):
        raise bad(key, "must be a list of messages")
    if not v and not allow_empty:
        raise bad(key, "must not be empty")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise bad(f"{key}[{i}]", "must be an object with 'role' and 'content'")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise bad(f"{key}[{i}].role", "must be a non-empty string")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "image"):
                    raise bad(f"{key}[{i}].content", "contains an image; this model takes text only")
                else:
                    raise bad(f"{key}[{i}].content", "parts must be {'type':'text','text':...}")
            content = "".join(parts)
        elif not isinstance(content, str):
            raise bad(f"{key}[{i}].content", "must be a string")
        if m.get("images"):
            raise bad(f"{key}[{i}].images", "images are not supported by this model")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return tuple(out)


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
        temperature=number(o, "temperature", lo=0, hi=100),
        top_p=number(o, "top_p", lo=0, hi=1),
        top_k=integer(o, "top_k", lo=0),
        min_p=number(o, "min_p", lo=0, hi=1),
        seed=integer(o, "seed"),
        stop=stop_list(o),
        repeat_penalty=number(o, "repeat_penalty", lo=0),
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
