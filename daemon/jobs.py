"""What a client asks for, once validated: the job types every adapter produces and the scheduler runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Source = Literal["cli", "openai", "ollama"]


@dataclass(frozen=True)
class GenOptions:
    """Sampling and length options, already converted from whichever API the job came through.

    None means "the model's default"; temperature 0 means greedy.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None  # drop tokens below min_p x the top token's probability (llama.cpp's sampler)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    cache_prompt: bool | None = None  # reuse the KV cache of a shared prefix (llama.cpp's name); None = model default

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v not in (None, ())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenOptions":
        d = dict(d)
        if "stop" in d:
            d["stop"] = tuple(d["stop"])
        return cls(**d)


@dataclass(frozen=True)
class ChatJob:
    """A text generation: `messages` go through the model's chat template; `prompt` with raw=True does not."""

    model: str
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    raw: bool = False
    options: GenOptions = GenOptions()
    keep_alive_s: float | None = None
    source: Source = "cli"
    peer: str = ""

    kind = "chat"

    def wire(self) -> dict[str, Any]:
        """The form sent to the runner process."""
        return {"messages": list(self.messages), "prompt": self.prompt, "raw": self.raw, "options": self.options.to_dict()}


@dataclass(frozen=True)
class EmbedJob:
    """A list of texts to embed, in order. Large jobs run in slices that go back to the queue tail."""

    model: str
    texts: tuple[str, ...]
    truncate: bool = True
    keep_alive_s: float | None = None
    source: Source = "cli"
    peer: str = ""

    kind = "embed"


@dataclass(frozen=True)
class ModelAction:
    """Load or unload a model through the queue, so it never races a running job."""

    model: str
    action: Literal["load", "unload"]
    keep_alive_s: float | None = None
    source: Source = "cli"
    peer: str = ""

    kind = "model"


Job = Union[ChatJob, EmbedJob, ModelAction]


@dataclass
class JobStats:
    """Figures for one job; the same numbers feed `done`, Ollama durations, OpenAI usage and metrics."""

    wait_ms: float = 0.0
    load_ms: float = 0.0
    prefill_ms: float = 0.0
    prefill_tokens: int = 0
    generate_ms: float = 0.0
    generate_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the KV cache (prefix reuse), not prefilled
    memory_mb: float = 0.0
    total_ms: float = 0.0
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}
