"""What a pull reports, as typed values: kept free of the HTTP client so adapters can render them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PullEvent:
    """One Ollama pull status line."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def wire(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


SUCCESS = PullEvent("success")
