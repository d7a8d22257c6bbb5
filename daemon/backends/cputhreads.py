"""How many CPU threads a CPU engine should use: the physical cores, and on big.LITTLE only the big ones.

llama.cpp runs every thread in lock-step per layer, so one slow core slows them all: on an RK3588
(4x Cortex-A76 + 4x Cortex-A55) four threads on the A76s beat eight on all cores. Cores are read from
sysfs under a root the tests can point at a fake tree.
"""
from __future__ import annotations

import os
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text and text.isdigit() else None


def online_cpus(sysfs_root: str | Path = "/") -> list[Path]:
    """sysfs directories of the online CPUs (cpu0 has no `online` file: it is always on)."""
    base = Path(sysfs_root) / "sys" / "devices" / "system" / "cpu"
    dirs = sorted((d for d in base.glob("cpu[0-9]*") if d.name[3:].isdigit()), key=lambda d: int(d.name[3:]))
    return [d for d in dirs if _read(d / "online") != "0"]


def choose_threads(sysfs_root: str | Path = "/") -> int:
    """Physical cores of the fastest class: `cpu_capacity` (arm64), else `cpuinfo_max_freq`, else all alike."""
    cpus = online_cpus(sysfs_root)
    if not cpus:
        return os.cpu_count() or 1
    speed = {d: _int(d / "cpu_capacity") or _int(d / "cpufreq" / "cpuinfo_max_freq") or 0 for d in cpus}
    fastest = max(speed.values())
    big = [d for d in cpus if speed[d] == fastest]
    cores = {_read(d / "topology" / "core_cpus_list") or _read(d / "topology" / "thread_siblings_list") or d.name
             for d in big}
    return max(1, len(cores))
