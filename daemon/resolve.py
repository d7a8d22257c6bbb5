"""The effective request: one step at admission turns what a client asked into what the model is asked.

Every default is applied here, once, whichever API the job came through, so `/v1` and `/api` sample a
model the same way and `rk top` shows the real figures. Where a request and a model's Modelfile
disagree, the request wins, then the Modelfile (`PARAMETER`, `SYSTEM`, `MESSAGE`), then the engine's
own defaults (which the backend applies to whatever is still unset) — Ollama's order.

- options: the request's over the Modelfile's; the context the job needs (`num_ctx`) is decided here
  (see `context.py`), so residency loads what the resolved job says.
- system: the request's own system message, else the model's `SYSTEM`; Modelfile `MESSAGE` turns go
  right after it, before the conversation. A raw prompt is continued as it is.
- tools: `tool_choice: "none"` offers none (the model is not told of them).
- thinking: unset means the model's default: a model with the `thinking` capability thinks.

The runner then only renders the chat template and runs what it is given.
"""
from __future__ import annotations

from dataclasses import replace

from rk.daemon.context import needed_context
from rk.daemon.jobs import ChatJob, GenSpec, Message
from rk.daemon.store.models import Manifest


def resolve(job: ChatJob, m: Manifest, default_ctx: int) -> ChatJob:
    """`job` as `m` will run it."""
    spec = job.spec
    options = spec.options.over(m.defaults)
    options = replace(options, num_ctx=needed_context(m, options.num_ctx, default_ctx))
    tools, choice = (spec.tools, spec.tool_choice) if spec.tool_choice != "none" else ((), "auto")
    think = spec.think if spec.think is not None else (True if m.can("thinking") else None)
    resolved = replace(spec, options=options, tools=tools, tool_choice=choice, think=think,
                       messages=spec.messages if spec.raw else conversation(spec, m))
    return replace(job, spec=resolved)


def conversation(spec: GenSpec, m: Manifest) -> tuple[Message, ...]:
    """The messages a chat template renders: the system prompt, the Modelfile's turns, then the request's
    conversation (a bare prompt as one user turn)."""
    msgs = list(spec.messages) or [Message("user", spec.prompt or "")]
    head = [msgs.pop(0)] if msgs[0].role == "system" else ([Message("system", m.system)] if m.system else [])
    history = [Message(t["role"], t["content"]) for t in m.messages]
    return (*head, *history, *msgs)
