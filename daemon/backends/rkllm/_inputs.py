"""What a job sends to rkllm_run: a prompt (the runtime applies the model's own chat template), or,
when the manifest ships a tokenizer directory, token ids rendered with that tokenizer's chat template
(which bypasses the runtime's template, the way rkllama does).
"""
from __future__ import annotations

from ctypes import Structure, c_int32
from dataclasses import dataclass
from typing import Any

from rk.daemon.backends.rkllm._lib import RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, Abi
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenSpec, Message
from rk.daemon.models import Manifest


@dataclass
class RunInput:
    """An RKLLMInput plus the buffers it points into (kept alive for the run) and its token count if known."""

    struct: Structure
    keep: tuple[Any, ...]
    tokens: int | None


class InputBuilder:
    def __init__(self, manifest: Manifest, abi: Abi) -> None:
        self.manifest, self.abi = manifest, abi
        self.thinking = bool(manifest.params.get("thinking", False))
        self.tokenizer: Any = None
        if "tokenizer" in manifest.files:
            from transformers import AutoTokenizer  # only models that ship a tokenizer pay for this import

            self.tokenizer = AutoTokenizer.from_pretrained(str(manifest.path("tokenizer")))

    def chat(self, spec: GenSpec, context: int) -> RunInput:
        messages = spec.chat_messages(self.manifest.system)
        role = "tool" if messages[-1].role == "tool" else "user"
        if self.tokenizer is None:
            return self._prompt(spec.prompt if spec.prompt is not None else _flatten(messages), role)
        if spec.prompt is not None and spec.raw:
            ids = list(self.tokenizer(spec.prompt)["input_ids"])
        else:
            text = self.tokenizer.apply_chat_template([m.template_dict() for m in messages], add_generation_prompt=True, tokenize=False,
                                                      enable_thinking=self.thinking)
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= context:
            raise RkError("prompt_too_large", f"the prompt is {len(ids)} tokens; {self.manifest.name} has a "
                                              f"context of {context}", param="messages")
        return self._tokens(ids, role)

    def embed(self, text: str, context: int, truncate: bool) -> RunInput:
        if not text.strip():
            raise RkError("empty_input", "cannot embed an empty text", param="input")
        if self.tokenizer is None:
            return self._prompt(text, "user")
        ids = list(self.tokenizer(text)["input_ids"])
        if len(ids) > context:
            if not truncate:
                raise RkError("prompt_too_large", f"an input is {len(ids)} tokens; {self.manifest.name} takes {context}",
                              param="input")
            ids = ids[:context]
        return self._tokens(ids, "user")

    def _base(self, role: str, input_type: int) -> Structure:
        inp = self.abi.RKLLMInput()
        inp.role, inp.enable_thinking, inp.input_type = role.encode(), self.thinking, input_type
        return inp

    def _prompt(self, text: str, role: str) -> RunInput:
        inp = self._base(role, RKLLM_INPUT_PROMPT)
        data = text.encode()
        inp.prompt_input = data
        return RunInput(inp, (data,), None)

    def _tokens(self, ids: list[int], role: str) -> RunInput:
        inp = self._base(role, RKLLM_INPUT_TOKEN)
        buf = (c_int32 * len(ids))(*ids)
        inp.token_input.input_ids = buf
        inp.token_input.n_tokens = len(ids)
        return RunInput(inp, (buf,), len(ids))


def _flatten(messages: list[Message]) -> str:
    """One prompt for the runtime's own template: a lone user turn as is, a longer conversation as a transcript.

    Each run is independent (keep_history=0), so earlier turns have to travel in the prompt itself.
    """
    if len(messages) == 1:
        return messages[0].content
    head = "\n".join(f"{m.role}: {m.content}" for m in messages[:-1])
    return f"{head}\n{messages[-1].content}"

