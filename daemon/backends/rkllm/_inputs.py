"""What a job sends to rkllm_run, and the identity of what that leaves in the runtime's KV cache.

Three ways to send a chat:
- prompt (no tokenizer shipped): the runtime applies the model's own chat template to each run;
- tokens (the manifest ships a tokenizer directory): ids rendered with that tokenizer's chat template,
  which bypasses the runtime's template, the way rkllama does;
- prompt through the tokenizer callback (1.3, `params.tokenizer_callback: true`, for a model converted
  without its own tokenizer): prompts as in the first case, tokenised by the shipped tokenizer on demand.

Multi-turn reuse: every chat input comes with a `Key`, the identity of the conversation unit by unit
(prompt modes: one digest per normalised message; token mode: the token ids), computed by rk from what
the client sent, never from a client-supplied id. When the key of what the KV cache holds (earlier
messages plus the reply generated into it) is a proper prefix of a job's key, only the new part is sent.
`_turns` is the one place that reads the request's messages (the glue to port to typed `Message`s).
"""
from __future__ import annotations

import hashlib
import json
from ctypes import Structure, c_int32
from dataclasses import dataclass
from typing import Any, Hashable

from rk.daemon.backends.rkllm._lib import RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, Abi
from rk.daemon.context import prompt_too_large
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenSpec, ToolCall
from rk.daemon.store.models import Manifest

Key = tuple[Hashable, ...]
Turn = tuple[str, str]  # (role, content)
# The end of a reasoning block in a reply (RKLLM's thinking models write Qwen3's `<think>…</think>`).
_THINK_END = "</think>"
# Roles an RKLLMInput can carry; a continuation in prompt mode must be exactly one message with one of them.
_INPUT_ROLES = ("user", "tool")


@dataclass
class RunInput:
    """An RKLLMInput plus the buffers it points into (kept alive for the run) and its token count if known."""

    struct: Structure
    keep: tuple[Any, ...]
    tokens: int | None


@dataclass
class ChatInput:
    """One chat job's input: what to run, the key of the conversation it ends, and how much of that key
    the KV cache already holds (0: the cache must be cleared and `run` carries everything)."""

    run: RunInput
    key: Key
    reused: int


def _turns(spec: GenSpec) -> list[Turn]:
    """The request's conversation as (role, content); a bare prompt is one user turn.

    An assistant turn's tool calls are written back the way the model writes them; consecutive tool
    results become one `tool` turn whose content is a JSON array of them, as the official server sends.
    """
    turns: list[Turn] = []
    results: list[str] = []
    for m in spec.chat_messages():
        if m.role == "tool":
            results.append(m.content)
            continue
        if results:
            turns.append(("tool", json.dumps(results, ensure_ascii=False)))
            results = []
        content = m.content
        if m.tool_calls:
            content = "\n".join([content, *(tool_call_block(c) for c in m.tool_calls)])
        turns.append((m.role, content))
    if results:
        turns.append(("tool", json.dumps(results, ensure_ascii=False)))
    return turns


def tool_call_block(c: ToolCall) -> str:
    """A call as RKLLM's function-calling models write it."""
    return f'<tool_call>\n{json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)}\n</tool_call>'


def tools_json(spec: GenSpec) -> str | None:
    """The request's tools as `rkllm_set_function_tools` takes them (OpenAI's list), or None without tools."""
    if not spec.tools:
        return None
    return json.dumps([t.template_dict() for t in spec.tools], ensure_ascii=False)


def thinking_for(spec: GenSpec, default: bool) -> bool:
    """`RKLLMInput.enable_thinking` for this request: its `think` (an effort level is on), else the model's default."""
    return default if spec.think is None else spec.think is not False


def turn_digest(role: str, content: str) -> str:
    """A message's identity: its role and its words, whatever whitespace separates them (clients trim
    replies, and a tool call sent back is written with other line breaks than the model used)."""
    return hashlib.sha256(f"{role}\x00{' '.join(content.split())}".encode()).hexdigest()[:32]


def continues(held: Key | None, key: Key) -> int:
    """How many units of `key` the cache holds: len(held) when it is a proper prefix of `key`, else 0."""
    if held is None or len(held) >= len(key) or key[:len(held)] != held:
        return 0
    return len(held)


class InputBuilder:
    def __init__(self, manifest: Manifest, abi: Abi) -> None:
        self.manifest, self.abi = manifest, abi
        # A model that declares thinking thinks unless asked not to, as Ollama's do; params.thinking overrides.
        self.thinking = bool(manifest.params.get("thinking", manifest.can("thinking")))
        self.tokenizer: Any = None
        if "tokenizer" in manifest.files:
            from transformers import AutoTokenizer  # only models that ship a tokenizer pay for this import

            self.tokenizer = AutoTokenizer.from_pretrained(str(manifest.path("tokenizer")))
        self.via_callback = bool(manifest.params.get("tokenizer_callback", False))
        if self.via_callback and (self.tokenizer is None or not abi.callback_struct):
            raise RkError("model_failed", f"{manifest.name}: params.tokenizer_callback needs a shipped tokenizer "
                                          "(files.tokenizer) and runtime 1.3")

    @property
    def sends_tokens(self) -> bool:
        return self.tokenizer is not None and not self.via_callback

    def encode(self, text: bytes) -> list[int]:
        """The tokenizer callback's work: ids of exactly these bytes (no special tokens added)."""
        return list(self.tokenizer(text.decode("utf-8", "replace"), add_special_tokens=False)["input_ids"])

    def chat(self, spec: GenSpec, context: int, held: Key | None) -> ChatInput:
        """The job's input, only its new part when `held` (what the KV cache holds) is a prefix of it."""
        turns = _turns(spec)
        raw = spec.prompt is not None and spec.raw
        think = thinking_for(spec, self.thinking)
        if self.sends_tokens:
            return self._chat_tokens(spec, turns, raw, context, held, think)
        if raw:
            text = spec.prompt or ""
            return ChatInput(self._prompt(text, "user", think), (turn_digest("prompt", text),), 0)
        media = spec.media()  # first in the key: a cache made beside other images never continues
        key: Key = (*media, *(turn_digest(r, c) for r, c in turns))
        reused = continues(held, key)
        new = turns[max(0, reused - len(media)):]
        if reused and len(new) == 1 and new[0][0] in _INPUT_ROLES:
            return ChatInput(self._prompt(new[0][1], new[0][0], think), key, reused)
        role = "tool" if turns[-1][0] == "tool" else "user"
        return ChatInput(self._prompt(_flatten(turns), role, think), key, 0)

    def reply_key(self, text: str, token_ids: list[int]) -> Key:
        """The units a generated reply adds to the KV cache's key: in prompt modes, the digest of the
        message a client sends back, which carries the answer and its calls but not the reasoning."""
        if self.sends_tokens:
            return tuple(token_ids)
        return (turn_digest("assistant", text.rsplit(_THINK_END, 1)[-1]),)

    def embed(self, text: str, context: int, truncate: bool) -> RunInput:
        if not text.strip():
            raise RkError("empty_input", "cannot embed an empty text", param="input")
        if not self.sends_tokens:
            return self._prompt(text, "user")
        ids = list(self.tokenizer(text)["input_ids"])
        if len(ids) > context:
            if not truncate:
                raise RkError("prompt_too_large", f"an input is {len(ids)} tokens; {self.manifest.name} takes {context}",
                              param="input")
            ids = ids[:context]
        return self._tokens(ids, "user")

    def _chat_tokens(self, spec: GenSpec, turns: list[Turn], raw: bool, context: int, held: Key | None,
                     think: bool) -> ChatInput:
        """Token input: the tokenizer's template renders the conversation, its tools and the thinking switch."""
        if raw:
            ids = list(self.tokenizer(spec.prompt)["input_ids"])
        else:
            tools = tools_json(spec)
            messages = [m.template_dict() for m in spec.chat_messages()]
            text = self.tokenizer.apply_chat_template(messages, tools=json.loads(tools) if tools else None,
                                                      add_generation_prompt=True, tokenize=False, enable_thinking=think)
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= context:
            raise prompt_too_large(self.manifest.name, len(ids), context)
        media = spec.media()
        key: Key = (*media, *ids)
        reused = continues(held, key)
        role = "tool" if turns[-1][0] == "tool" else "user"
        return ChatInput(self._tokens(ids[max(0, reused - len(media)):], role, think), key, reused)

    def _base(self, role: str, input_type: int, think: bool) -> Structure:
        inp = self.abi.RKLLMInput()
        inp.role, inp.enable_thinking, inp.input_type = role.encode(), think, input_type
        return inp

    def _prompt(self, text: str, role: str, think: bool = False) -> RunInput:
        inp = self._base(role, RKLLM_INPUT_PROMPT, think)
        data = text.encode()
        inp.prompt_input = data
        return RunInput(inp, (data,), None)

    def _tokens(self, ids: list[int], role: str, think: bool = False) -> RunInput:
        inp = self._base(role, RKLLM_INPUT_TOKEN, think)
        buf = (c_int32 * len(ids))(*ids)
        inp.token_input.input_ids = buf
        inp.token_input.n_tokens = len(ids)
        return RunInput(inp, (buf,), len(ids))


def _flatten(turns: list[Turn]) -> str:
    """One prompt for the runtime's own template: a lone user turn as is, a longer conversation as a transcript.

    Used when the KV cache does not hold the conversation's beginning, so earlier turns travel in the prompt.
    """
    if len(turns) == 1:
        return turns[0][1]
    head = "\n".join(f"{role}: {content}" for role, content in turns[:-1])
    return f"{head}\n{turns[-1][1]}"
