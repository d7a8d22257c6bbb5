"""Platform and NPU telemetry, read from files under a root directory (`/` on a board, a fake tree in tests).

Sources (vendor rknpu driver, see the runtime reference): the SoC from the device-tree `compatible`;
per-core load from debugfs `rknpu/load` ("NPU load:  Core0:  3%, Core1:  0%," or single-core "NPU load:  3%");
the frequency from devfreq `*npu*/cur_freq`; the driver version from debugfs or the module; system memory
in use from /proc/meminfo (the NPU has no RAM of its own). Anything missing or unreadable is "n/a" or
None, never an exception: most machines running rk have no NPU at all.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NA = "n/a"
_CORE = re.compile(r"Core(\d+):\s*(\d+)%")
_SINGLE = re.compile(r"NPU load:\s*(\d+)%")
_SOC = re.compile(r"rockchip,(r[kv]\d+\w*)")
_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


def _read(root: Path, *candidates: str) -> str | None:
    """The text of the first readable file among `candidates` (paths relative to root)."""
    for rel in candidates:
        try:
            return (root / rel).read_text(encoding="utf-8", errors="replace")
        except (OSError, ValueError):
            continue
    return None


def soc(root: Path) -> str:
    """'RK3588' from compatible = "radxa,rock-5b\\0rockchip,rk3588\\0"; "n/a" off Rockchip."""
    text = _read(root, "proc/device-tree/compatible", "sys/firmware/devicetree/base/compatible")
    m = _SOC.search(text.replace("\0", " ")) if text else None
    return m[1].upper() if m else NA


def npu_load(root: Path) -> list[dict[str, int]] | None:
    """Busy percent per core over the driver's last 1 s window; None without the debugfs file."""
    text = _read(root, "sys/kernel/debug/rknpu/load", "proc/rknpu/load")
    if text is None:
        return None
    cores = [{"core": int(c), "percent": int(p)} for c, p in _CORE.findall(text)]
    if cores:
        return cores
    single = _SINGLE.search(text)
    return [{"core": 0, "percent": int(single[1])}] if single else None


def npu_freq_mhz(root: Path) -> float | None:
    for path in sorted((root / "sys/class/devfreq").glob("*npu*/cur_freq")):
        try:
            return int(path.read_text().strip()) / 1e6
        except (OSError, ValueError):
            continue
    return None


def driver_version(root: Path) -> str:
    text = _read(root, "sys/kernel/debug/rknpu/version", "proc/rknpu/version", "sys/module/rknpu/version")
    m = _VERSION.search(text) if text else None
    return m[1] if m else NA


def memory_mb(root: Path) -> dict[str, float] | None:
    """System memory in use (MemTotal - MemAvailable), where NPU buffers live too; None if unreadable."""
    text = _read(root, "proc/meminfo")
    if text is None:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) / 1024
    if "MemTotal" not in fields or "MemAvailable" not in fields:
        return None
    return {"used_mb": round(fields["MemTotal"] - fields["MemAvailable"], 1), "total_mb": round(fields["MemTotal"], 1)}


def read_npu(root: Path) -> dict[str, Any]:
    """One JSON-serialisable snapshot of the platform and the NPU, for `status` and `rk top`."""
    root = Path(root)
    return {"soc": soc(root), "driver": driver_version(root), "load": npu_load(root),
            "freq_mhz": npu_freq_mhz(root), "memory": memory_mb(root)}
