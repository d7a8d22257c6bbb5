"""Convert a GGUF file once into bf16 safetensors in the model store, so later loads take seconds.

transformers dequantises GGUF on every load (13-45 s on a small CPU); the converted copy loads in ~2 s.
The copy is written to a temporary directory and renamed into place, so an interrupted conversion
never leaves a half-written model behind.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger("rk.runner.convert")


def ensure_converted(gguf: Path, target: Path) -> float:
    """Make `target` hold tokenizer + weights converted from `gguf`; returns seconds spent (0 if cached)."""
    if (target / "config.json").exists():
        return 0.0
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.info("converting %s once into %s (later loads reuse it)", gguf.name, target)
    tmp = target.with_name(target.name + ".converting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    model.config.quantization_config = None  # the weights are dense now: save them as plain bf16
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it loosely; None is what disables it
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    del model  # the dense copy is large: free it before the caller loads the saved one
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    took = time.perf_counter() - t0
    log.info("converted %s in %.1f s", gguf.name, took)
    return took
