"""Ollama's Modelfile, read into the typed `CreateSpec` that `/api/create` also fills (see the Ollama family).

Modelfile: one instruction per line (`FROM`, `PARAMETER name value`, `SYSTEM`, `TEMPLATE`,
`MESSAGE role text`, `LICENSE`, `ADAPTER`), case-insensitive, `#` comments, values bare, "quoted"
or in triple quotes spanning lines. `PARAMETER stop` may repeat.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from rk.daemon.errors import RkError

# Modelfile PARAMETER names -> their value type (Ollama's, as its docs list them).
PARAMETERS: dict[str, type] = {"num_ctx": int, "temperature": float, "top_k": int, "top_p": float, "min_p": float,
                               "repeat_penalty": float, "repeat_last_n": int, "seed": int, "stop": str,
                               "num_predict": int}
ROLES = ("system", "user", "assistant", "tool")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\s*(.*)$", re.S)


@dataclass(frozen=True)
class CreateSpec:
    """A model to create: from an existing model (`base`) or from uploaded blobs (`files`), plus its settings."""

    model: str
    base: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (file name, sha256 hex) of blobs already uploaded
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # Ollama names, typed
    messages: tuple[tuple[str, str], ...] = ()  # (role, content)
    license: str | None = None
    stream: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)  # the parameters as GenOptions fields, checked by the API


def digest_hex(value: Any, param: str = "digest") -> str:
    """`sha256:<hex>` (or Ollama's blob file spelling `sha256-<hex>`) -> hex; anything else is refused."""
    m = _DIGEST.match(value) if isinstance(value, str) else None
    if not m:
        raise RkError("bad_request", f"{param}: expected sha256:<64 hex digits>, got {value!r}", param=param)
    return m[1]


def is_path(source: str) -> bool:
    """A FROM value naming a file rather than a model."""
    return source.startswith(("/", ".", "~")) or source.lower().endswith((".gguf", ".rkllm"))


def _value(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """An instruction's value, which may open a triple-quoted block running over the following lines."""
    rest = rest.strip()
    if rest.startswith('"""'):
        body = rest[3:]
        while '"""' not in body:
            if i >= len(lines):
                raise RkError("bad_request", 'Modelfile: unterminated """ block')
            body += "\n" + lines[i]
            i += 1
        text, _, tail = body.partition('"""')
        if tail.strip():
            raise RkError("bad_request", f'Modelfile: unexpected text after """: {tail.strip()!r}')
        return text, i
    if len(rest) >= 2 and rest[0] == rest[-1] == '"':
        return rest[1:-1], i
    return rest, i


def _parameter(name: str, raw: str) -> Any:
    kind = PARAMETERS.get(name)
    if kind is None:
        raise RkError("bad_request", f"Modelfile: unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
    try:
        return kind(raw)
    except ValueError:
        raise RkError("bad_request", f"Modelfile: parameter {name} needs a {kind.__name__}, not {raw!r}") from None


def parse(text: str, model: str, stream: bool = True) -> tuple[CreateSpec, str]:
    """A Modelfile as a CreateSpec, plus its FROM value (a model name, a file path or @sha256:<hex>)."""
    lines = text.splitlines()
    params: dict[str, Any] = {}
    messages: list[tuple[str, str]] = []
    single: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            raise RkError("bad_request", f"Modelfile line {i}: cannot read {line!r}")
        word, rest = m[1].upper(), m[2]
        if word == "PARAMETER":
            name, _, raw = rest.strip().partition(" ")
            value, i = _value(raw, lines, i)
            parsed = _parameter(name.lower(), value)
            if name.lower() == "stop":
                params.setdefault("stop", []).append(parsed)
            else:
                params[name.lower()] = parsed
        elif word == "MESSAGE":
            role, _, raw = rest.strip().partition(" ")
            if role.lower() not in ROLES:
                raise RkError("bad_request", f"Modelfile: MESSAGE role must be one of {', '.join(ROLES)}, not {role!r}")
            value, i = _value(raw, lines, i)
            messages.append((role.lower(), value))
        elif word in ("FROM", "SYSTEM", "TEMPLATE", "LICENSE"):
            value, i = _value(rest, lines, i)
            single[word] = value
        elif word == "ADAPTER":
            raise RkError("not_implemented", "Modelfile: ADAPTER (LoRA) is not supported by rk")
        else:
            raise RkError("bad_request", f"Modelfile line {i}: unknown instruction {word}")
    source = single.get("FROM")
    if not source:
        raise RkError("bad_request", "Modelfile: FROM is required (a model name or a model file)")
    spec = CreateSpec(model, system=single.get("SYSTEM"), template=single.get("TEMPLATE"), parameters=params,
                      messages=tuple(messages), license=single.get("LICENSE"), stream=stream)
    return spec, source


def to_json(spec: CreateSpec) -> bytes:
    """The structured `/api/create` body for a spec (what `rk create` sends)."""
    body: dict[str, Any] = {"model": spec.model, "stream": spec.stream}
    if spec.base:
        body["from"] = spec.base
    if spec.files:
        body["files"] = {name: f"sha256:{hex_}" for name, hex_ in spec.files}
    for key in ("system", "template", "license"):
        if getattr(spec, key) is not None:
            body[key] = getattr(spec, key)
    if spec.parameters:
        body["parameters"] = spec.parameters
    if spec.messages:
        body["messages"] = [{"role": r, "content": c} for r, c in spec.messages]
    return orjson.dumps(body)
