"""Find librkllmrt.so and decide which header (ABI) it was built from, before any call into it.

Detection, in order:
1. Symbols: the library must export every function of the 1.2.1+ header (`EXPORTS`). 1.1.x and 1.2.0
   lack `rkllm_get_kv_cache_size`, `rkllm_set_function_tools` and `rkllm_set_cross_attn_params` (and their
   callback returns void), so they are refused here. 1.2.1+ and 1.3.0 export the same names, so symbols
   cannot tell them apart.
2. The version stored in the library file, read the way a shipped build stores it (strings of a real
   aarch64 1.2.1b1 build): the init banner is a *format string* (`rkllm-runtime version: %s, ...`), so it
   never holds the version; the SDK line `RKLLM SDK (version: X.Y.Z | target: ... )` does, and is read
   first; the version also sits as a standalone NUL-terminated literal (`1.2.1`), the second witness.
   When both are present they must agree; several different literals without an SDK line are refused.
3. An explicit choice (the manifest's `params.runtime`, or RK_RKLLM_VERSION / Settings.rkllm_version)
   decides when the file stores no version (or names two), and must agree with what it stores otherwise.
Betas (`1.2.1b1`: its header is not 1.2.1's), versions outside 1.2.1-1.2.x / 1.3.x, contradictions and an
undecidable library are a clear `model_failed` error with the remedy, raised before any call into it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

from rk.daemon.backends.rkllm._lib import ABIS, EXPORTS
from rk.daemon.errors import RkError

log = logging.getLogger("rk.rkllm")

_SDK = re.compile(rb"RKLLM SDK \(version: v?(\d+\.\d+\.\d+(?:b\d+)?)")
# Lookarounds, not \x00...\x00: two literals stored back to back share the NUL between them.
_LITERAL = re.compile(rb"(?<=\x00)v?(1\.\d+\.\d+(?:b\d+)?)(?=\x00)")
_SETTING = "RK_RKLLM_VERSION=1.2|1.3 (or params.runtime in the model manifest)"
_REINSTALL = ("install librkllmrt.so unmodified from one rknn-llm release (1.2.1 or later, or 1.3.x: "
              "rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so)")


@dataclass(frozen=True)
class Stored:
    """The version strings found in a library file: from SDK lines, and standalone literals."""

    sdk: frozenset[str]
    literals: frozenset[str]


@dataclass(frozen=True)
class Detected:
    """What binding a library was decided on: the ABI key, the version read (if any) and where it came from."""

    abi: str
    version: str | None
    source: str  # "sdk line", "sdk line + literal", "literal" or "setting"


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
    """'1.2.1' -> '1.2', '1.3.0' -> '1.3'; None for a beta or a version whose header this binding does not mirror."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        return None
    major, minor, patch = int(m[1]), int(m[2]), int(m[3])
    if (major, minor) == (1, 3):
        return "1.3"
    if (major, minor) == (1, 2) and patch >= 1:
        return "1.2"
    return None


def read_stored(path: Path) -> Stored:
    """Every version the library file stores, by witness (empty sets when it cannot be read)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return Stored(frozenset(m[1].decode() for m in _SDK.finditer(data)),
                          frozenset(m[1].decode() for m in _LITERAL.finditer(data)))
    except (OSError, ValueError):
        return Stored(frozenset(), frozenset())


def stored_version(path: Path, stored: Stored) -> tuple[str | None, str]:
    """The one version the file states, and which witness said so; (None, why) when it states none or several."""
    if len(stored.sdk) > 1:
        return None, f"{path} names several versions in its SDK lines ({', '.join(sorted(stored.sdk))})"
    if stored.sdk:
        (sdk,) = stored.sdk
        if stored.literals and sdk not in stored.literals:
            return None, (f"{path} says version {sdk} in its SDK line but {', '.join(sorted(stored.literals))} "
                          "in its version literal")
        return sdk, "sdk line + literal" if stored.literals else "sdk line"
    if len(stored.literals) > 1:
        return None, f"{path} stores several version literals ({', '.join(sorted(stored.literals))}) and no SDK line"
    if stored.literals:
        return next(iter(stored.literals)), "literal"
    return None, f"{path} stores no version (no 'RKLLM SDK (version: ...' line, no version literal)"


def check_symbols(lib: ctypes.CDLL, path: Path) -> None:
    missing = [s for s in EXPORTS if not hasattr(lib, s)]
    if missing:
        raise RkError("model_failed", f"{path} is not an RKLLM runtime >= 1.2.1 (missing {', '.join(missing)}); "
                                      "runtimes 1.1.x and 1.2.0 are not supported")


def _supported(path: Path, version: str) -> str:
    """The ABI key of a stored version, or a refusal naming the remedy."""
    if re.fullmatch(r"\d+\.\d+\.\d+b\d+", version):
        raise RkError("model_failed", f"{path} is RKLLM runtime {version}, a beta whose header differs from the "
                                      f"release's; {_REINSTALL}")
    abi = abi_of(version)
    if abi is None:
        raise RkError("model_failed", f"{path} is RKLLM runtime {version}; supported: 1.2.1-1.2.x and 1.3.x; {_REINSTALL}")
    return abi


def select_abi(path: Path, lib: ctypes.CDLL, *, manifest_choice: str | None, setting: str | None) -> Detected:
    """The binding for `lib`; raises instead of guessing."""
    check_symbols(lib, path)
    choices = {c for c in (manifest_choice, setting) if c}
    for c in choices:
        if c not in ABIS:
            raise RkError("model_failed", f"unknown RKLLM runtime version {c!r}: use 1.2 or 1.3")
    if len(choices) > 1:
        raise RkError("model_failed", f"the model manifest asks for runtime {manifest_choice} but "
                                      f"RK_RKLLM_VERSION says {setting}; remove one of them")
    chosen = next(iter(choices), None)
    stored = read_stored(path)
    found, source = stored_version(path, stored)
    if found is None:
        candidates = {abi_of(v) for v in stored.sdk | stored.literals}
        if chosen is None:
            raise RkError("model_failed", f"cannot tell which RKLLM runtime this is: {source}; {_REINSTALL}, "
                                          f"or set {_SETTING} to say which header it was built from")
        if candidates and chosen not in candidates:
            raise RkError("model_failed", f"{source}, and neither is the configured {chosen}; {_REINSTALL}")
        log.warning("%s; using the %s binding as configured", source, chosen)
        return Detected(chosen, None, "setting")
    detected = _supported(path, found)
    if chosen is not None and chosen != detected:
        raise RkError("model_failed", f"refusing to bind the {chosen} header to {path}, which is runtime {found} "
                                      f"(their structs differ; mixing them corrupts memory): set {_SETTING} "
                                      f"to {detected}, or remove the setting")
    return Detected(detected, found, source)
