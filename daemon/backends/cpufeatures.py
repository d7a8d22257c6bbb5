"""What the CPU can do, from `/proc/cpuinfo`, and the one engine setting that depends on it: llama.cpp's
weight repack.

llama.cpp repacks weights at load time into layouts for the CPU's fastest kernels ("extra buffer
types"). On ARM boards the repacked Q4_0 kernels are the fast path; on an Intel CPU with AMX (Sapphire
Rapids and later) the AMX repack segfaults in `ggml_backend_amx_mul_mat` on the first multi-token
prefill (llama.cpp #20824), so `auto` turns it off exactly there. The file is read under the same root
as sysfs, so tests fake a machine with a directory tree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rk.daemon.settings import REPACK_SETTINGS

AMX_FLAGS = frozenset({"amx_tile", "amx_int8"})


@dataclass(frozen=True)
class CpuFeatures:
    """The union of every core's feature flags (x86 `flags`, ARM `Features`) and the ARM core types."""

    flags: frozenset[str] = frozenset()
    parts: tuple[str, ...] = ()  # ARM `CPU part` per core, e.g. 0xd0b (Cortex-A76), 0xd05 (Cortex-A55)

    @property
    def amx(self) -> bool:
        return bool(self.flags & AMX_FLAGS)


def read_cpu_features(root: str | Path = "/") -> CpuFeatures:
    """Parse `<root>/proc/cpuinfo`; an unreadable file means no known features."""
    try:
        text = (Path(root) / "proc" / "cpuinfo").read_text(errors="replace")
    except OSError:
        return CpuFeatures()
    flags: set[str] = set()
    parts: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu part":
            parts.append(value.strip().lower())
    return CpuFeatures(frozenset(flags), tuple(parts))


@dataclass(frozen=True)
class RepackChoice:
    """Whether llama.cpp may repack weights, and why; `str()` is what `rk status` shows."""

    on: bool
    why: str

    def __str__(self) -> str:
        return f"{'on' if self.on else 'off'} ({self.why})"


def choose_repack(setting: str, features: CpuFeatures, safe: bool = False) -> RepackChoice:
    """`RK_LLAMA_REPACK` applied to this CPU: `auto` is off where the CPU has AMX, on elsewhere;
    `safe` (a reload after the engine crashed) is off whatever the setting."""
    if safe:
        return RepackChoice(False, "safe reload after an engine crash")
    if setting == "on":
        return RepackChoice(True, "RK_LLAMA_REPACK=on")
    if setting == "off":
        return RepackChoice(False, "RK_LLAMA_REPACK=off")
    if setting != "auto":
        raise ValueError(f"RK_LLAMA_REPACK must be one of {', '.join(REPACK_SETTINGS)}, not {setting!r}")
    if features.amx:
        return RepackChoice(False, "cpu has AMX")
    return RepackChoice(True, "auto")
