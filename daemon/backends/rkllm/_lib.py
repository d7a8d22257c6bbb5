"""A 1:1 ctypes mirror of `rkllm.h` (librkllmrt.so) for runtime 1.2.1-1.2.3 and 1.3.0, LP64.

Everything the two headers declare identically is defined once; `ABIS["1.2"]` and `ABIS["1.3"]` differ
only where the headers do: `RKLLMParam`, the multimodal input (and so `RKLLMInput`), `RKLLMInferParam`,
and the third argument of `rkllm_init` (a bare callback in 1.2, an `RKLLMCallback*` in 1.3).
Binding one ABI to the other's library corrupts memory (rknn-llm#509), so `bind` is only ever called
with the ABI that version detection (`_version.py`) selected. tests/native/ holds the same headers in C.
"""
from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_bool,
    c_char_p,
    c_float,
    c_int,
    c_int8,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any, ClassVar

LLMHandle = c_void_p

# LLMCallState
RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING, RKLLM_RUN_FINISH, RKLLM_RUN_ERROR = 0, 1, 2, 3
# RKLLMInputType
RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL = 0, 1, 2, 3
# RKLLMInferMode
RKLLM_INFER_GENERATE, RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_INFER_GET_LOGITS = 0, 1, 2
# LLMResultCallback return values (1.2.1+): continue, pause (rkllm_run returns; resume with another run)
CALLBACK_CONTINUE, CALLBACK_PAUSE = 0, 1


# ---- identical in 1.2.1+ and 1.3.0 ---------------------------------------------------------------

class RKLLMExtendParam(Structure):
    _fields_: ClassVar[Any] = [("base_domain_id", c_int32), ("embed_flash", c_int8), ("enabled_cpus_num", c_int8),
                ("enabled_cpus_mask", c_uint32), ("n_batch", c_uint8), ("use_cross_attn", c_int8),
                ("reserved", c_uint8 * 104)]


class RKLLMLoraAdapter(Structure):
    _fields_: ClassVar[Any] = [("lora_adapter_path", c_char_p), ("lora_adapter_name", c_char_p), ("scale", c_float)]


class RKLLMEmbedInput(Structure):
    _fields_: ClassVar[Any] = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]


class RKLLMTokenInput(Structure):
    _fields_: ClassVar[Any] = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]


class RKLLMLoraParam(Structure):
    _fields_: ClassVar[Any] = [("lora_adapter_name", c_char_p)]


class RKLLMPromptCacheParam(Structure):
    _fields_: ClassVar[Any] = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]


class RKLLMCrossAttnParam(Structure):
    _fields_: ClassVar[Any] = [("encoder_k_cache", POINTER(c_float)), ("encoder_v_cache", POINTER(c_float)),
                ("encoder_mask", POINTER(c_float)), ("encoder_pos", POINTER(c_int32)), ("num_tokens", c_int)]


class RKLLMResultLastHiddenLayer(Structure):
    _fields_: ClassVar[Any] = [("hidden_states", POINTER(c_float)), ("embd_size", c_int), ("num_tokens", c_int)]


class RKLLMResultLogits(Structure):
    _fields_: ClassVar[Any] = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]


class RKLLMPerfStat(Structure):
    _fields_: ClassVar[Any] = [("prefill_time_ms", c_float), ("prefill_tokens", c_int), ("generate_time_ms", c_float),
                ("generate_tokens", c_int), ("memory_usage_mb", c_float)]


class RKLLMResult(Structure):
    # `text` is c_void_p, not c_char_p: it may be NULL or an incomplete UTF-8 piece, read with ctypes.string_at
    _fields_: ClassVar[Any] = [("text", c_void_p), ("token_id", c_int32), ("last_hidden_layer", RKLLMResultLastHiddenLayer),
                ("logits", RKLLMResultLogits), ("perf", RKLLMPerfStat)]


# typedef int (*LLMResultCallback)(RKLLMResult* result, void* userdata, LLMCallState state);
LLMResultCallback = CFUNCTYPE(c_int, POINTER(RKLLMResult), c_void_p, c_int)

_SAMPLING = [("top_k", c_int32), ("top_p", c_float), ("temperature", c_float), ("repeat_penalty", c_float),
             ("frequency_penalty", c_float), ("presence_penalty", c_float), ("mirostat", c_int32),
             ("mirostat_tau", c_float), ("mirostat_eta", c_float)]
_PARAM_HEAD = [("model_path", c_char_p), ("max_context_len", c_int32), ("max_new_tokens", c_int32),
               ("top_k", c_int32), ("n_keep", c_int32)] + _SAMPLING[1:] + [("skip_special_token", c_bool)]
_INFER_HEAD = [("mode", c_int), ("lora_params", POINTER(RKLLMLoraParam)),
               ("prompt_cache_params", POINTER(RKLLMPromptCacheParam))]


def _input(multimodal: type[Structure]) -> type[Structure]:
    """RKLLMInput: role, enable_thinking, input_type, then an anonymous union of the inputs."""
    union = type("_RKLLMInputUnion", (Union,), {"_fields_": [
        ("prompt_input", c_char_p), ("embed_input", RKLLMEmbedInput), ("token_input", RKLLMTokenInput),
        ("multimodal_input", multimodal)]})
    return type("RKLLMInput", (Structure,), {"_anonymous_": ("_u",), "_fields_": [
        ("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int), ("_u", union)]})


# ---- 1.2.1 - 1.2.3 --------------------------------------------------------------------------------

class RKLLMParam12(Structure):
    _fields_: ClassVar[Any] = _PARAM_HEAD + [("is_async", c_bool), ("img_start", c_char_p), ("img_end", c_char_p),
                              ("img_content", c_char_p), ("extend_param", RKLLMExtendParam)]


class RKLLMMultiModalInput12(Structure):
    """`RKLLMMultiModelInput` until 1.2.2, renamed in 1.2.3 with the same layout."""

    _fields_: ClassVar[Any] = [("prompt", c_char_p), ("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t),
                ("n_image", c_size_t), ("image_width", c_size_t), ("image_height", c_size_t)]


class RKLLMInferParam12(Structure):
    _fields_: ClassVar[Any] = _INFER_HEAD + [("keep_history", c_int)]


# ---- 1.3.0 ------------------------------------------------------------------------------------------

# typedef int (*LLMGetEmbedCallback)(void* userdata, int32_t* tokens, uint64_t num_tokens, void* embed, uint64_t len);
LLMGetEmbedCallback = CFUNCTYPE(c_int, c_void_p, POINTER(c_int32), c_uint64, c_void_p, c_uint64)
# typedef int (*LLMTokenizerCallback)(void* userdata, const char* text, int32_t text_len, int32_t* tokens, int32_t n_tokens_max);
# `text` is c_void_p, not c_char_p: it is not NUL-terminated, exactly text_len bytes are read (ctypes.string_at).
LLMTokenizerCallback = CFUNCTYPE(c_int, c_void_p, c_void_p, c_int32, POINTER(c_int32), c_int32)


class RKLLMParam13(Structure):
    _fields_: ClassVar[Any] = _PARAM_HEAD + [("ignore_eos_token", c_bool), ("is_async", c_bool),
                                             ("extend_param", RKLLMExtendParam)]


class _Image13(Structure):
    _fields_: ClassVar[Any] = [("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t), ("n_image", c_size_t),
                ("image_start", c_char_p), ("image_end", c_char_p), ("image_content", c_char_p),
                ("image_width", c_size_t), ("image_height", c_size_t)]


class _Video13(Structure):
    _fields_: ClassVar[Any] = [("video_embed", POINTER(c_float)), ("n_frame_tokens", c_size_t), ("n_frame_per_video", c_size_t),
                ("n_video", c_size_t), ("video_start", c_char_p), ("video_end", c_char_p),
                ("video_content", c_char_p), ("frame_width", c_size_t), ("frame_height", c_size_t)]


class RKLLMMultiModalInput13(Structure):
    _fields_: ClassVar[Any] = [("prompt", c_char_p), ("image", _Image13), ("video", _Video13)]


class RKLLMSamplingParam(Structure):
    _fields_: ClassVar[Any] = _SAMPLING


class RKLLMInferParam13(Structure):
    _fields_: ClassVar[Any] = _INFER_HEAD + [("sampling_params", POINTER(RKLLMSamplingParam)), ("keep_history", c_int),
                              ("max_new_tokens", c_int32)]


class RKLLMCallback(Structure):
    _fields_: ClassVar[Any] = [("result_callback", LLMResultCallback), ("result_userdata", c_void_p),
                ("tokenizer_callback", LLMTokenizerCallback), ("tokenizer_userdata", c_void_p),
                ("embed_callback", LLMGetEmbedCallback), ("embed_userdata", c_void_p)]


# ---- the two ABIs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Abi:
    """The declarations of one header version. 1.3 passes callbacks in a struct and takes sampling per run."""

    version: str
    RKLLMParam: type[Structure]
    RKLLMMultiModalInput: type[Structure]
    RKLLMInput: type[Structure]
    RKLLMInferParam: type[Structure]
    callback_struct: bool
    sampling_per_run: bool

    @property
    def init_arg(self) -> Any:
        """The C type of rkllm_init's third argument."""
        return POINTER(RKLLMCallback) if self.callback_struct else LLMResultCallback

    def init_callback(self, callback: Any, tokenizer: Any = None) -> Any:
        """What to pass as that argument for `callback` and, on 1.3, an optional LLMTokenizerCallback
        (the caller keeps both alive as long as the handle)."""
        if not self.callback_struct:
            return callback
        cb = RKLLMCallback(result_callback=callback)
        if tokenizer is not None:
            cb.tokenizer_callback = tokenizer
        return cb

    def structs(self) -> dict[str, type[Structure]]:
        """Every struct of this header by its C name (for the layout test)."""
        common = {c.__name__: c for c in (RKLLMExtendParam, RKLLMLoraAdapter, RKLLMEmbedInput, RKLLMTokenInput,
                                          RKLLMLoraParam, RKLLMPromptCacheParam, RKLLMCrossAttnParam,
                                          RKLLMResultLastHiddenLayer, RKLLMResultLogits, RKLLMPerfStat, RKLLMResult)}
        own = {"RKLLMParam": self.RKLLMParam, "RKLLMMultiModalInput": self.RKLLMMultiModalInput,
               "RKLLMInput": self.RKLLMInput, "RKLLMInferParam": self.RKLLMInferParam}
        if self.sampling_per_run:
            own["RKLLMSamplingParam"] = RKLLMSamplingParam
        if self.callback_struct:
            own["RKLLMCallback"] = RKLLMCallback
        return common | own


ABIS: dict[str, Abi] = {
    "1.2": Abi("1.2", RKLLMParam12, RKLLMMultiModalInput12, _input(RKLLMMultiModalInput12), RKLLMInferParam12,
               callback_struct=False, sampling_per_run=False),
    "1.3": Abi("1.3", RKLLMParam13, RKLLMMultiModalInput13, _input(RKLLMMultiModalInput13), RKLLMInferParam13,
               callback_struct=True, sampling_per_run=True),
}

# The header's whole function list, in declaration order: every real 1.2.1+ and 1.3.0 build exports all of
# it; 1.1.x and 1.2.0 (whose callback returns void) lack get_kv_cache_size, set_function_tools and
# set_cross_attn_params.
EXPORTS = ("rkllm_createDefaultParam", "rkllm_init", "rkllm_load_lora", "rkllm_load_prompt_cache",
           "rkllm_release_prompt_cache", "rkllm_destroy", "rkllm_run", "rkllm_run_async", "rkllm_abort",
           "rkllm_is_running", "rkllm_clear_kv_cache", "rkllm_get_kv_cache_size", "rkllm_set_chat_template",
           "rkllm_set_function_tools", "rkllm_set_cross_attn_params")


def bind(lib: ctypes.CDLL, abi: Abi) -> ctypes.CDLL:
    """Declare every function of `abi`'s header on `lib` (argtypes/restype), and return it."""
    H, Input, Infer = LLMHandle, POINTER(abi.RKLLMInput), POINTER(abi.RKLLMInferParam)
    protos: dict[str, tuple[list[Any], Any]] = {
        # RKLLMParam rkllm_createDefaultParam();
        "rkllm_createDefaultParam": ([], abi.RKLLMParam),
        # 1.2: int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback);
        # 1.3: int rkllm_init(LLMHandle* handle, RKLLMParam* param, RKLLMCallback* callback);
        "rkllm_init": ([POINTER(H), POINTER(abi.RKLLMParam), abi.init_arg], c_int),
        # int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter* lora_adapter);
        "rkllm_load_lora": ([H, POINTER(RKLLMLoraAdapter)], c_int),
        # int rkllm_load_prompt_cache(LLMHandle handle, const char* prompt_cache_path);
        "rkllm_load_prompt_cache": ([H, c_char_p], c_int),
        # int rkllm_release_prompt_cache(LLMHandle handle);
        "rkllm_release_prompt_cache": ([H], c_int),
        # int rkllm_destroy(LLMHandle handle);
        "rkllm_destroy": ([H], c_int),
        # int rkllm_run(LLMHandle handle, RKLLMInput* rkllm_input, RKLLMInferParam* rkllm_infer_params, void* userdata);
        "rkllm_run": ([H, Input, Infer, c_void_p], c_int),
        # int rkllm_run_async(LLMHandle handle, RKLLMInput* rkllm_input, RKLLMInferParam* rkllm_infer_params, void* userdata);
        "rkllm_run_async": ([H, Input, Infer, c_void_p], c_int),
        # int rkllm_abort(LLMHandle handle);
        "rkllm_abort": ([H], c_int),
        # int rkllm_is_running(LLMHandle handle);  (1.3 docs: 1 = running; 1.2 docs: 0 = running)
        "rkllm_is_running": ([H], c_int),
        # int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int* start_pos, int* end_pos);
        "rkllm_clear_kv_cache": ([H, c_int, POINTER(c_int), POINTER(c_int)], c_int),
        # int rkllm_get_kv_cache_size(LLMHandle handle, int* cache_sizes);
        "rkllm_get_kv_cache_size": ([H, POINTER(c_int)], c_int),
        # int rkllm_set_chat_template(LLMHandle handle, const char* system_prompt, const char* prompt_prefix,
        #                             const char* prompt_postfix);
        "rkllm_set_chat_template": ([H, c_char_p, c_char_p, c_char_p], c_int),
        # int rkllm_set_function_tools(LLMHandle handle, const char* system_prompt, const char* tools,
        #                              const char* tool_response_str);
        "rkllm_set_function_tools": ([H, c_char_p, c_char_p, c_char_p], c_int),
        # int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam* cross_attn_params);
        "rkllm_set_cross_attn_params": ([H, POINTER(RKLLMCrossAttnParam)], c_int),
    }
    for name, (argtypes, restype) in protos.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib
