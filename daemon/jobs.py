"""What a client asks for, once validated: the job types every adapter produces and the scheduler runs.

Everything here is a frozen value: adapters build it from wire JSON, the queue holds it, the runner
codec carries the parts a backend needs. No dicts cross a layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Union

from rk.daemon.media import Image

Source = Literal["cli", "openai", "ollama", "anthropic"]
Role = Literal["system", "user", "assistant", "tool"]
# Ollama's `think`: None = the model's default (on for a thinking model), True/False, or an effort level.
Think = Union[bool, Literal["low", "medium", "high"], None]
# OpenAI's `tool_choice`: "auto" (default), "none", "required", or the name of the one function to call.
ToolChoice = str
# Structured output: None (free text), "json" (any JSON object) or a JSON schema.
Format = Union[Literal["json"], dict[str, Any], None]


@dataclass(frozen=True)
class GenOptions:
    """Sampling and length options, already converted from whichever API the job came through.

    None means "the model's default"; temperature 0 means greedy.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    cache_prompt: bool | None = None  # reuse the KV cache of a shared prefix (llama.cpp's name); None = model default

    def set(self) -> dict[str, Any]:
        """The options this job sets, by field name (a manifest's defaults use the same names)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, ())}

    def over(self, defaults: dict[str, Any]) -> GenOptions:
        """These options on top of a model's defaults (unknown default keys are ignored)."""
        known: dict[str, Any] = {k: (tuple(v) if k == "stop" else v) for k, v in defaults.items()
                                 if k in GenOptions.__dataclass_fields__}
        return replace(GenOptions(**known), **self.set())


@dataclass(frozen=True)
class ToolCall:
    """A function call the model made: `arguments` is the parsed JSON object; `id` is unique per reply."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class Tool:
    """A function the model may call, as both APIs describe it (`parameters` is a JSON schema)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def template_dict(self) -> dict[str, Any]:
        """The tool as chat templates and RKLLM's function calling take it (OpenAI's shape)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class Message:
    """One chat turn with every field today's clients send; adapters translate all of them."""

    role: Role
    content: str = ""
    images: tuple[Image, ...] = ()  # decoded at admission
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    thinking: str | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message as Hugging Face / Jinja chat templates expect it (OpenAI's shape, arguments as objects)."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in self.tool_calls]
        if self.tool_call_id:
            d["tool_call_id"] = self.tool_call_id
        if self.tool_name:
            d["name"] = self.tool_name
        return d


@dataclass(frozen=True)
class GenSpec:
    """What the model is asked, independent of who asked: the part of a chat job the runner receives."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None  # /api/generate and /v1/completions; with raw=True no template is applied
    raw: bool = False
    options: GenOptions = GenOptions()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True  # False: at most one tool call per reply (OpenAI's parallel_tool_calls)
    think: Think = None
    format: Format = None
    count_only: bool = False  # template and tokenise only: the reply is the prompt's token count (count_tokens)

    def media(self) -> tuple[str, ...]:
        """The digests of the prompt's images, in order: part of every KV-cache key."""
        return tuple(img.digest for m in self.messages for img in m.images)

    def chat_messages(self) -> list[Message]:
        """The conversation a chat template renders (a bare prompt is one user turn); the model's system
        prompt and Modelfile turns are already in it once the job is resolved (`resolve.py`)."""
        return list(self.messages) or [Message("user", self.prompt or "")]


@dataclass(frozen=True)
class ChatJob:
    """A text generation: `spec.messages` go through the model's chat template; `spec.prompt` with raw=True does not."""

    model: str
    spec: GenSpec = GenSpec()
    keep_alive_s: float | None = None
    source: Source = "cli"
    peer: str = ""

    kind = "chat"

    @property
    def options(self) -> GenOptions:
        return self.spec.options


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


@dataclass(frozen=True)
class Generated:
    """A finished generation as a non-streaming reply renders it."""

    text: str
    thinking: str
    tool_calls: tuple[ToolCall, ...]
    stats: JobStats


@dataclass
class GenResult:
    """The backend's own figures for one generation; the runner adds them to the job's `JobStats`."""

    prefill_ms: float = 0.0
    prefill_tokens: int = 0  # computed in this run
    cached_tokens: int = 0  # served from the KV cache of an earlier run
    generate_ms: float = 0.0
    generate_tokens: int = 0
    memory_mb: float = 0.0
    finish_reason: str = "stop"  # "stop" or "length"
    stop_sequence: str | None = None  # the request's stop string that ended the reply, if one did
    counted_tokens: int | None = None  # a count_only job: the prompt's tokens, none of them computed


@dataclass
class JobStats:
    """Figures for one job; the same numbers feed `done`, Ollama durations, OpenAI usage and metrics.

    `prompt_tokens` counts the whole prompt, cached or not (what usage and cost tracking need);
    `cached_tokens` is the part served from the KV cache, and `prefill_tokens` the part computed.
    """

    wait_ms: float = 0.0
    load_ms: float = 0.0
    prefill_ms: float = 0.0
    prefill_tokens: int = 0
    cached_tokens: int = 0
    generate_ms: float = 0.0
    generate_tokens: int = 0
    thinking_tokens: int = 0  # pieces of reasoning streamed (part of generate_tokens)
    prompt_tokens: int = 0
    memory_mb: float = 0.0
    total_ms: float = 0.0
    finish_reason: str = "stop"
    stop_sequence: str | None = None  # which stop string ended the reply (finish_reason "stop")
    batch_jobs: int = 1  # embedding jobs that shared a runner call with this one (the most seen)

    def record(self, r: GenResult) -> None:
        """Take a generation's figures from the backend; the prompt counts whole, cached part included."""
        self.prefill_ms, self.prefill_tokens, self.cached_tokens = r.prefill_ms, r.prefill_tokens, r.cached_tokens
        self.prompt_tokens = r.prefill_tokens + r.cached_tokens if r.counted_tokens is None else r.counted_tokens
        self.generate_ms, self.generate_tokens = r.generate_ms, r.generate_tokens
        self.memory_mb, self.finish_reason, self.stop_sequence = r.memory_mb, r.finish_reason, r.stop_sequence

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
