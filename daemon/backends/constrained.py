"""Constrained decoding for structured output: a JSON schema becomes a token mask applied before sampling,
so the reply is valid by construction.

Built on llguidance (the engine llama.cpp also links): one self-contained wheel with no torch, triton
or compiler at run time, JSON-schema support, a token mask in milliseconds (small against a CPU
forward pass), and tokenizer adapters for Hugging Face and llama.cpp vocabularies; it works with
transformers 5 and llama-cpp-python on CPU, so both CPU backends honour a schema the same way. Its matcher
also says when the JSON is complete, so generation ends there instead of waiting for the model's
end-of-turn token, and which tokens the grammar forces (keys, punctuation), so those are fed to the
model in one forward pass.
"""
from __future__ import annotations

import importlib
from typing import Any, Literal

from rk.daemon.jobs import Format
from rk.daemon.structured import schema_for


class JsonConstraint:
    """One generation's grammar state: `mask` the logits, sample, then `accept` the chosen token."""

    def __init__(self, lltok: Any, format: Format, arrays: Literal["torch", "numpy"] = "torch") -> None:
        import llguidance

        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_for(format), defaults={"whitespace_flexible": False})
        self._matcher = llguidance.LLMatcher(lltok, grammar)
        if self._matcher.is_error():
            raise ValueError(self._matcher.get_error())
        lib = importlib.import_module(f"llguidance.{arrays}")  # the mask for torch tensors or numpy arrays
        self._bitmask = lib.allocate_token_bitmask(1, lltok.vocab_size)
        self._fill, self._apply = lib.fill_next_token_bitmask, lib.apply_token_bitmask_inplace

    def masked(self, _input_ids: Any, scores: Any) -> Any:
        """The mask as a logits processor (llama-cpp-python's signature): the scores, masked in place."""
        self.mask(scores)
        return scores

    def mask(self, logits: Any) -> None:
        """Set every token that cannot continue valid JSON to -inf, in place."""
        self._fill(self._matcher, self._bitmask, 0)
        self._apply(logits, self._bitmask)

    def accept(self, token: int, room: int) -> list[int]:
        """Take the sampled token; returns the tokens the grammar forces next (at most `room`), already
        taken, which the caller feeds to the model in one forward pass instead of one pass each."""
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"constrained decoding refused token {token}: {self._matcher.get_error()}")
        forced = self._matcher.compute_ff_tokens()[:max(room, 0)]
        if forced and not self._matcher.consume_tokens(forced):
            raise RuntimeError(f"constrained decoding refused its own forced tokens: {self._matcher.get_error()}")
        return forced

    @property
    def complete(self) -> bool:
        """The JSON value is finished: nothing more may follow it."""
        return self._matcher.is_stopped()


def tokenizer_for(hf_tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per loaded model: it walks the vocabulary)."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer)


def tokenizer_for_llama(vocab: Any) -> Any:
    """llguidance's view of a llama.cpp vocabulary (built once per loaded model, about a second)."""
    import llguidance.llamacpp

    return llguidance.llamacpp.lltokenizer_from_vocab(vocab)
