"""What to run first on a real board: `python -m rk.daemon.backends.rkllm.check --lib LIB MODEL.rkllm`.

It prints what only a board can show: the SoC and NPU driver, the runtime version the library stores and
where it was read, which of the header's functions it exports, the struct sizes the binding will use
(against the LP64 figures of every public header), then one generation, one embedding from the same
handle, and how long `rkllm_abort` takes to end a run. Each step says OK or what failed, and the next
steps still run where they can. See docs/rkllm.md, "Board notes".
"""
from __future__ import annotations

import argparse
import ctypes
import os
import threading
import time
from pathlib import Path
from typing import Callable

from rk.daemon import npu
from rk.daemon.backends.base import RkllmOptions, RunnerConfig
from rk.daemon.backends.rkllm._lib import ABIS, EXPORTS
from rk.daemon.backends.rkllm._version import open_library, read_stored, select_abi
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenSpec, Message
from rk.daemon.store.models import Manifest

# sizeof on LP64 (aarch64), measured by compiling each public header: what a real librkllmrt.so expects.
REFERENCE_SIZES = {
    "1.2": {"RKLLMParam": 208, "RKLLMInput": 64, "RKLLMInferParam": 32, "RKLLMResult": 72, "RKLLMExtendParam": 120},
    "1.3": {"RKLLMParam": 184, "RKLLMInput": 160, "RKLLMInferParam": 40, "RKLLMResult": 72, "RKLLMExtendParam": 120,
            "RKLLMMultiModalInput": 144, "RKLLMSamplingParam": 36, "RKLLMCallback": 48},
}


class _Collect:
    """A Sink that keeps the text, and calls `on_token` with the number of pieces so far."""

    def __init__(self, on_token: Callable[[int], None] = lambda n: None) -> None:
        self.pieces: list[str] = []
        self.on_token = on_token

    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None: ...

    def token(self, text: str) -> None:
        self.pieces.append(text)
        self.on_token(len(self.pieces))


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def check(lib_path: str | None, model: Path, runtime: str | None, prompt: str, context: int) -> int:
    """Run every step; the number of failed steps is the exit status."""
    failed = 0
    root = Path("/")
    _step("board")
    print(f"SoC: {npu.soc(root) or 'unknown'}  NPU driver: {npu.driver_version(root) or 'unreadable (debugfs needs root)'}")

    _step("library and version")
    try:
        lib, path = open_library(lib_path)
    except RkError as e:
        print(f"FAIL {e.message}")
        return 1
    stored = read_stored(path)
    print(f"file: {path}")
    print(f"SDK lines: {sorted(stored.sdk) or 'none'}  version literals: {sorted(stored.literals) or 'none'}")
    missing = [name for name in EXPORTS if not hasattr(lib, name)]
    print("exports: " + ", ".join(f"{n.removeprefix('rkllm_')}{'' if hasattr(lib, n) else ' MISSING'}" for n in EXPORTS))
    try:
        detected = select_abi(path, lib, manifest_choice=runtime, setting=None)
    except RkError as e:
        print(f"FAIL {e.message}")
        return 1 + bool(missing)
    print(f"OK runtime {detected.version or '?'} from the {detected.source}: binding the {detected.abi} header")

    _step("struct sizes (this machine vs LP64 reference)")
    structs = ABIS[detected.abi].structs()
    for name, want in REFERENCE_SIZES[detected.abi].items():
        got = ctypes.sizeof(structs[name])
        print(f"{name:24} {got:4}  reference {want:4}  {'OK' if got == want else 'DIFFERS (not LP64?)'}")

    _step("load")
    from rk.daemon.backends.rkllm.backend import load

    manifest = Manifest(name="check:model", backend="rkllm", files={"model": model.name},
                        context_length=context, params={"pooling": "last"}, dir=model.parent.resolve())
    t0 = time.perf_counter()
    try:
        m = load(manifest, RunnerConfig(rkllm=RkllmOptions(lib=str(path), version=runtime)))
    except RkError as e:
        print(f"FAIL {e.message}")
        return failed + 1
    print(f"OK loaded in {(time.perf_counter() - t0) * 1000:.0f} ms, RSS {m.memory_mb():.0f} MB")
    try:
        _step("generate")
        sink = _Collect()
        r = m.generate(GenSpec(messages=(Message("user", prompt),), options=GenOptions(max_tokens=48)),
                       sink, threading.Event())
        print(f"text: {''.join(sink.pieces)!r}")
        print(f"prefill {r.prefill_tokens} tokens in {r.prefill_ms:.0f} ms; generate {r.generate_tokens} tokens in "
              f"{r.generate_ms:.0f} ms; peak memory {r.memory_mb:.0f} MB; finish {r.finish_reason}")

        _step("embed (the same handle, last-token hidden state)")
        try:
            vec = m.embed(["The NPU runs the model.", "A lighthouse stands by the sea."], truncate=True)
            print(f"OK dim {vec.vectors.shape[1]}, tokens {vec.tokens}, cosine {float(vec.vectors[0] @ vec.vectors[1]):.3f}")
        except RkError as err:
            failed += 1
            print(f"FAIL {err.message}")

        _step("abort latency (rkllm_abort from another thread after 4 tokens)")
        asked: list[float] = []

        def abort_after(n: int) -> None:
            if n == 4 and not asked:
                asked.append(time.perf_counter())
                threading.Thread(target=m.abort).start()

        sink = _Collect(abort_after)
        m.generate(GenSpec(messages=(Message("user", "Write a long story about a lighthouse keeper."),)),
                   sink, threading.Event())
        if asked:
            print(f"run returned {(time.perf_counter() - asked[0]) * 1000:.1f} ms after rkllm_abort "
                  f"({len(sink.pieces)} pieces streamed)")
        else:
            print(f"the run ended after {len(sink.pieces)} pieces, before an abort could be sent")
    except RkError as e:
        failed += 1
        print(f"FAIL {e.message}")
    finally:
        m.close()
    return failed + bool(missing)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m rk.daemon.backends.rkllm.check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a .rkllm model file")
    ap.add_argument("--lib", help="librkllmrt.so (default: RK_RKLLM_LIB, then the loader path)")
    ap.add_argument("--runtime", choices=sorted(ABIS), help="the header to bind when the library stores no version")
    ap.add_argument("--prompt", default="Say hello in five words.")
    ap.add_argument("--context", type=int, default=4096, help="max_context_len (at most the model's)")
    args = ap.parse_args(argv)
    raise SystemExit(check(args.lib or os.environ.get("RK_RKLLM_LIB"), args.model, args.runtime, args.prompt, args.context))


if __name__ == "__main__":
    main()
