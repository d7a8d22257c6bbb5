"""Find librkllmrt.so and decide which header (ABI) it was built from, before any call into it.

Detection, in order:
1. Symbols: the library must export every function of the 1.2.1+ header (`REQUIRED_SYMBOLS`). 1.1.x and
   1.2.0 lack `rkllm_get_kv_cache_size`, `rkllm_set_function_tools` and `rkllm_set_cross_attn_params`
   (and their callback returns void), so they are refused here. 1.2.1+ and 1.3.0 export the same names,
   so symbols cannot tell them apart.
2. The version the runtime announces at init ("rkllm-runtime version: 1.3.0, rknpu driver version: ...")
   is read from the library file's bytes, where the banner text is stored: `\\brkllm-runtime version: X.Y.Z`.
   If the banner is stored as a format string with the version elsewhere, the only standalone
   NUL-terminated "1.2.N" / "1.3.N" literals are used, provided they all name one ABI.
3. An explicit choice (the manifest's `params.runtime`, or RK_RKLLM_VERSION / Settings.rkllm_version)
   wins when detection finds nothing, and must agree with what detection found otherwise.
Nothing found and nothing chosen, a version outside 1.2.1-1.2.x / 1.3.x, or a choice that contradicts
the library: a clear `model_failed` error, raised before rkllm_createDefaultParam is ever called.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import re
from pathlib import Path

from rk.daemon.backends.rkllm._lib import ABIS, REQUIRED_SYMBOLS
from rk.daemon.errors import RkError

log = logging.getLogger("rk.rkllm")

_BANNER = re.compile(rb"rkllm-runtime version:? v?(\d+\.\d+\.\d+(?:b\d+)?)")
_LITERAL = re.compile(rb"\x00(1\.[23]\.\d+(?:b\d+)?)\x00")
_HINT = "set RK_RKLLM_VERSION=1.2|1.3 (or params.runtime in the model manifest) to say which runtime this is"


def open_library(explicit: str | None) -> tuple[ctypes.CDLL, Path]:
    """Load RK_RKLLM_LIB / --rkllm-lib when set, else librkllmrt.so from the loader path; and its file."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not path.is_file():
            raise RkError("model_failed", f"RKLLM runtime not found at {path} (RK_RKLLM_LIB / --rkllm-lib)")
        name = str(path)
    else:
        name = ctypes.util.find_library("rkllmrt") or "librkllmrt.so"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise RkError("model_failed", f"cannot load the RKLLM runtime ({e}); install librkllmrt.so on the "
                                      "loader path or point RK_RKLLM_LIB / --rkllm-lib at it") from None
    return lib, path if explicit else _mapped_file(Path(name).name)


def _mapped_file(name: str) -> Path:
    """Where the loader found `name`: the file mapped into this process under that name."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and Path(parts[5].strip()).name == name:
                return Path(parts[5].strip())
    return Path(name)


def abi_of(version: str) -> str | None:
    """'1.2.1' -> '1.2', '1.3.0' -> '1.3'; None for a version whose header this binding does not mirror."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(b\d+)?", version)
    if not m:
        return None
    major, minor, patch, beta = int(m[1]), int(m[2]), int(m[3]), m[4]
    if (major, minor) == (1, 3):
        return "1.3"
    if (major, minor) == (1, 2) and patch >= 1 and not (patch == 1 and beta):
        return "1.2"
    return None


def read_version(path: Path) -> str | None:
    """The runtime version stored in the library file, or None when it cannot be read unambiguously."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            banner = _BANNER.search(data)
            if banner:
                return banner[1].decode()
            literals = {m[1].decode() for m in _LITERAL.finditer(data)}
    except (OSError, ValueError):
        return None
    abis = {abi_of(v) for v in literals}
    return max(literals) if len(abis) == 1 and None not in abis else None


def check_symbols(lib: ctypes.CDLL, path: Path) -> None:
    missing = [s for s in REQUIRED_SYMBOLS if not hasattr(lib, s)]
    if missing:
        raise RkError("model_failed", f"{path} is not an RKLLM runtime >= 1.2.1 (missing {', '.join(missing)}); "
                                      "runtimes 1.1.x and 1.2.0 are not supported")


def select_abi(path: Path, lib: ctypes.CDLL, *, manifest_choice: str | None, setting: str | None) -> str:
    """The ABI key ("1.2" or "1.3") to bind `lib` with; raises instead of guessing."""
    check_symbols(lib, path)
    choices = {c for c in (manifest_choice, setting) if c}
    for c in choices:
        if c not in ABIS:
            raise RkError("model_failed", f"unknown RKLLM runtime version {c!r}: use 1.2 or 1.3")
    if len(choices) > 1:
        raise RkError("model_failed", f"the model manifest asks for runtime {manifest_choice} but "
                                      f"RK_RKLLM_VERSION says {setting}")
    chosen = next(iter(choices), None)
    found = read_version(path)
    if found is None:
        if chosen is None:
            raise RkError("model_failed", f"cannot tell which RKLLM runtime {path} is; {_HINT}")
        log.warning("runtime version of %s not detected; using the %s binding as configured", path, chosen)
        return chosen
    detected = abi_of(found)
    if detected is None:
        raise RkError("model_failed", f"{path} is RKLLM runtime {found}; supported: 1.2.1-1.2.x and 1.3.x")
    if chosen is not None and chosen != detected:
        raise RkError("model_failed", f"refusing to bind the {chosen} header to {path}, which is runtime {found} "
                                      f"(their structs differ; mixing them corrupts memory)")
    return detected
