"""The API families rk serves over HTTP. Adding one is a folder under `families/` and one line here."""
from __future__ import annotations

from rk.daemon.families.anthropic.routes import FAMILY as ANTHROPIC
from rk.daemon.families.ollama.routes import FAMILY as OLLAMA
from rk.daemon.families.openai.routes import FAMILY as OPENAI
from rk.daemon.families.responses.routes import FAMILY as RESPONSES
from rk.daemon.http.family import Family

FAMILIES: tuple[Family, ...] = (
    OLLAMA,  # /api/* and everything else (Ollama's root probe)
    OPENAI,  # /v1/* chat completions, completions, embeddings, models
    ANTHROPIC,  # /v1/messages, /v1/messages/count_tokens
    RESPONSES,  # /v1/responses
)
