"""What makes an API family one unit: its routes, its error shape, how it reads a key, what CORS lets pages send.

A family is a folder under `rk.daemon.families`: `adapter.py` translates its wire JSON to typed jobs and
typed events to its shapes (pure: no aiohttp, queue or runner), `routes.py` serves them and declares its
`FAMILY`; `families/registry.py` lists the families. The HTTP middleware asks the family that owns a path
how to render an error and read a key, so nothing outside the folder knows a family's dialect.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from aiohttp import web


class ErrorBody(Protocol):
    """A family's error object for an HTTP status, a message, and rk's code and parameter."""

    def __call__(self, status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]: ...


def bearer(headers: Mapping[str, str]) -> str | None:
    """The key of `Authorization: Bearer KEY`, as OpenAI and Ollama clients send it."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def api_key_or_bearer(headers: Mapping[str, str]) -> str | None:
    """`x-api-key: KEY` (Claude Code with ANTHROPIC_API_KEY) or `Authorization: Bearer KEY` (the Anthropic SDK,
    ANTHROPIC_AUTH_TOKEN)."""
    key = headers.get("x-api-key")
    return key.strip() if key is not None else bearer(headers)


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]  # the paths it owns: errors there, 404s and 405s included, take its shape
    add_routes: Callable[[web.Application], None]
    error_body: ErrorBody
    read_key: Callable[[Mapping[str, str]], str | None] = bearer
    key_hint: str = "Authorization: Bearer KEY"  # how its clients send a key, for the 401's message
    cors_headers: tuple[str, ...] = ()  # request headers its browser clients send beyond the common ones
    statuses: Mapping[str, int] = field(default_factory=dict)  # rk error code -> this API's own status (Anthropic: 529)

    def status(self, code: str, default: int) -> int:
        """The HTTP status this family answers rk's error `code` with."""
        return self.statuses.get(code, default)


def family_for(families: Sequence[Family], path: str) -> Family:
    """The family owning `path`: the longest matching prefix (`/v1/messages` before `/v1/`)."""
    best: tuple[int, Family] | None = None
    for fam in families:
        for prefix in fam.prefixes:
            if (path == prefix.rstrip("/") or path.startswith(prefix)) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), fam)
    if best is None:
        raise LookupError(f"no API family owns {path}: one family must own '/'")
    return best[1]
