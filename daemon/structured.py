"""Structured output: the JSON schema a request's `format` stands for, and checking a finished reply
against it, for engines that cannot constrain decoding (RKLLM) and as a last guard for those that do.
"""
from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from rk.daemon.errors import RkError

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def schema_for(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a grammar builder should enforce: `"json"` is any object; None is free text.

    A schema that is not a valid JSON schema, or any other value, is the client's error (400).
    """
    if format is None:
        return None
    if format == "json":
        return _ANY_OBJECT
    if not isinstance(format, dict):
        raise RkError("bad_request", f"format must be \"json\" or a JSON schema object, not {format!r}", param="format")
    try:
        jsonschema.validators.validator_for(format).check_schema(format)
    except jsonschema.SchemaError as e:
        raise RkError("bad_request", f"format is not a valid JSON schema: {e.message} (at {_path(e.absolute_path)})",
                      param="format") from None
    return format


def validate(reply: str, format: str | dict[str, Any] | None) -> str | None:
    """None if `reply` satisfies `format`, else one sentence naming the problem and where it is."""
    schema = schema_for(format)
    if schema is None:
        return None
    try:
        value = json.loads(reply, parse_constant=_reject_constant)
    except ValueError as e:
        return f"the reply is not valid JSON: {e}"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    return f"the reply does not match the schema at {_path(error.absolute_path)}: {error.message}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _path(parts: Any) -> str:
    """A JSONPath-like location: `$`, `$.items[2].price`."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if str(p).isidentifier() else f"[{json.dumps(p)}]"
    return out
