"""The API families rk serves over HTTP. Adding one is a folder under `families/` and one line here."""
from __future__ import annotations

from rk.daemon.families.ollama.routes import FAMILY as OLLAMA
from rk.daemon.families.openai.routes import FAMILY as OPENAI
from rk.daemon.http.family import Family

FAMILIES: tuple[Family, ...] = (
    OLLAMA,  # /api/* and everything else (Ollama's root probe)
    OPENAI,  # /v1/* chat completions, completions, embeddings, models
)
