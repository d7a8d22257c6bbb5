"""NPU telemetry from a fake sysfs/procfs tree, and from no tree at all."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rk.daemon.npu import read_npu


def put(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_rk3588_tree_gives_per_core_load_and_frequency(tmp_path: Path) -> None:
    put(tmp_path, "proc/device-tree/compatible", "radxa,rock-5b\0rockchip,rk3588\0")
    put(tmp_path, "sys/kernel/debug/rknpu/load", "NPU load:  Core0: 37%, Core1:  0%, Core2: 100%,\n")
    put(tmp_path, "sys/kernel/debug/rknpu/version", "RKNPU driver: v0.9.8\n")
    put(tmp_path, "sys/class/devfreq/fdab0000.npu/cur_freq", "1000000000\n")
    put(tmp_path, "sys/class/devfreq/dmc/cur_freq", "2112000000\n")
    put(tmp_path, "proc/meminfo", "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    6000000 kB\n")
    snap = read_npu(tmp_path)
    assert snap == {
        "soc": "RK3588", "driver": "0.9.8", "freq_mhz": 1000.0,
        "load": [{"core": 0, "percent": 37}, {"core": 1, "percent": 0}, {"core": 2, "percent": 100}],
        "memory": {"used_mb": round(2000000 / 1024, 1), "total_mb": round(8000000 / 1024, 1)},
    }
    orjson.dumps(snap)


def test_single_core_load_and_module_version(tmp_path: Path) -> None:
    put(tmp_path, "proc/device-tree/compatible", "rockchip,rk3562-evb\0rockchip,rk3562\0")
    put(tmp_path, "sys/kernel/debug/rknpu/load", "NPU load:  5%\n")
    put(tmp_path, "sys/module/rknpu/version", "0.9.7\n")
    snap = read_npu(tmp_path)
    assert snap["soc"] == "RK3562" and snap["driver"] == "0.9.7"
    assert snap["load"] == [{"core": 0, "percent": 5}] and snap["freq_mhz"] is None


@pytest.mark.parametrize("root", ["missing", "empty"])
def test_no_tree_gives_na(tmp_path: Path, root: str) -> None:
    base = tmp_path / root
    if root == "empty":
        base.mkdir()
    assert read_npu(base) == {"soc": "n/a", "driver": "n/a", "load": None, "freq_mhz": None, "memory": None}


def test_unreadable_or_garbled_files_give_na(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel/debug/rknpu/load").mkdir(parents=True)  # a directory where a file should be
    put(tmp_path, "sys/class/devfreq/fdab0000.npu/cur_freq", "fast\n")
    put(tmp_path, "proc/device-tree/compatible", "generic,x86\0")
    put(tmp_path, "proc/meminfo", "garbage\n")
    assert read_npu(tmp_path) == {"soc": "n/a", "driver": "n/a", "load": None, "freq_mhz": None, "memory": None}


def test_status_carries_the_npu_snapshot(daemon_factory, tmp_path: Path) -> None:
    put(tmp_path / "sys-root", "sys/kernel/debug/rknpu/load", "NPU load:  Core0: 12%, Core1:  3%,\n")
    put(tmp_path / "sys-root", "sys/class/devfreq/27700000.npu/cur_freq", "950000000\n")
    d = daemon_factory(env={"RK_SYSFS_ROOT": str(tmp_path / "sys-root")})
    with d.client() as c:
        npu = c.call("status")["npu"]
    assert npu["load"] == [{"core": 0, "percent": 12}, {"core": 1, "percent": 3}] and npu["freq_mhz"] == 950.0
    assert npu["soc"] == "n/a"
