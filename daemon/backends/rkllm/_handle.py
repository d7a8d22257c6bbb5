"""The owner of one RKLLM handle: rkllm_init on creation, rkllm_destroy exactly once on close.

It keeps the C callback (and, for 1.3, the RKLLMCallback struct) alive as long as the handle, and routes
each callback to the listener of the run in progress. Only `abort` may be called from another thread.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from ctypes import POINTER, Structure, byref, c_int
from typing import Any, Callable

from rk.daemon.backends.rkllm._lib import CALLBACK_PAUSE, Abi, LLMHandle, LLMResultCallback, LLMTokenizerCallback, RKLLMResult
from rk.daemon.errors import RkError

log = logging.getLogger("rk.rkllm")

Listener = Callable[[RKLLMResult, int], int]
Encode = Callable[[bytes], list[int]]


def tokenizer_callback(encode: Encode) -> Any:
    """An LLMTokenizerCallback over `encode`: reads exactly `text_len` bytes (the text is not NUL-terminated),
    writes at most `n_tokens_max` ids and returns their count, or -1 (never raises into the runtime)."""

    def call(_userdata: int | None, text: int | None, text_len: int, tokens: Any, n_tokens_max: int) -> int:
        try:
            ids = encode(ctypes.string_at(text, text_len) if text and text_len > 0 else b"")
            if len(ids) > n_tokens_max:
                log.error("tokenizer callback: %d tokens, the runtime takes at most %d", len(ids), n_tokens_max)
                return -1
            for i, t in enumerate(ids):
                tokens[i] = t
            return len(ids)
        except Exception:
            log.exception("tokenizer callback failed")
            return -1

    return LLMTokenizerCallback(call)


def _check(rc: int, op: str) -> None:
    """Turn a non-zero status from the runtime into a job error naming the call."""
    if rc != 0:
        raise RkError("model_failed", f"RKLLM {op} failed with status {rc} (the runtime's log on stderr says why)")


class Handle:
    def __init__(self, lib: ctypes.CDLL, abi: Abi, param: Structure, encode: Encode | None = None) -> None:
        self._lib, self.abi = lib, abi
        self.param = param  # the runtime may keep pointers into it (model_path)
        self._listener: Listener | None = None
        self._error: BaseException | None = None
        self._callback = LLMResultCallback(self._trampoline)
        self._tokenizer = tokenizer_callback(encode) if encode is not None else None
        self._init_arg = abi.init_callback(self._callback, self._tokenizer)
        self._lock = threading.Lock()  # orders abort() against close()
        handle = LLMHandle()
        _check(lib.rkllm_init(byref(handle), byref(param), self._init_arg), "rkllm_init")
        self._h: int | None = handle.value

    def _trampoline(self, result: Any, userdata: int | None, state: int) -> int:
        """The C callback: never lets a Python exception unwind into the runtime; pauses the run instead."""
        try:
            if self._listener is None:
                return 0
            return self._listener(result.contents, state)
        except BaseException as e:  # noqa: BLE001 - nothing may unwind into C; run() re-raises it
            self._error = e
            return CALLBACK_PAUSE

    def run(self, inp: Structure, infer: Structure, listener: Listener) -> None:
        """rkllm_run, synchronously: `listener(result, state)` gets every callback and returns 0 or 1 (pause)."""
        h = self._live()
        self._listener, self._error = listener, None
        try:
            rc = self._lib.rkllm_run(h, byref(inp), byref(infer), None)
        finally:
            self._listener = None
        if self._error is not None:
            raise self._error
        _check(rc, "rkllm_run")

    def abort(self) -> None:
        """rkllm_abort, from any thread; a no-op once closed."""
        with self._lock:
            if self._h is not None:
                rc = self._lib.rkllm_abort(self._h)
                if rc != 0:
                    log.warning("rkllm_abort returned %s", rc)

    def clear_kv_cache(self, keep_system_prompt: bool = False) -> None:
        """Forget everything the last run left in the KV cache, so the next job starts clean."""
        _check(self._lib.rkllm_clear_kv_cache(self._live(), int(keep_system_prompt), None, None), "rkllm_clear_kv_cache")

    def kv_cache_size(self) -> int:
        """Positions held in the KV cache (batch 0; the backend always uses n_batch=1)."""
        sizes = (c_int * 1)()
        _check(self._lib.rkllm_get_kv_cache_size(self._live(), ctypes.cast(sizes, POINTER(c_int))), "rkllm_get_kv_cache_size")
        return sizes[0]

    def set_chat_template(self, system: str, prefix: str, postfix: str) -> None:
        _check(self._lib.rkllm_set_chat_template(self._live(), system.encode(), prefix.encode(), postfix.encode()),
               "rkllm_set_chat_template")

    def set_function_tools(self, system: str, tools: str, tool_response: str = "tool_response") -> None:
        """The tools the runtime's template offers the model (a JSON list), and the system prompt with them."""
        _check(self._lib.rkllm_set_function_tools(self._live(), system.encode(), tools.encode(), tool_response.encode()),
               "rkllm_set_function_tools")

    def close(self) -> None:
        with self._lock:
            h, self._h = self._h, None
        if h is not None:
            _check(self._lib.rkllm_destroy(h), "rkllm_destroy")

    def _live(self) -> int:
        if self._h is None:
            raise RkError("internal", "the RKLLM handle is closed")
        return self._h
