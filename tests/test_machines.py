"""The engine settings on machines other than this one (tests/machines.py): CPU features from
`/proc/cpuinfo`, the llama.cpp weight-repack decision, and the thread choice, in-process."""
from __future__ import annotations

from pathlib import Path

import pytest

from rk.daemon.backends.cpufeatures import CpuFeatures, RepackChoice, choose_repack, read_cpu_features
from rk.daemon.backends.cputhreads import choose_threads
from rk.daemon.settings import Settings

from machines import MACHINES, machine


@pytest.fixture(params=sorted(MACHINES))
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    return request.param, machine(tmp_path, request.param)


def test_amx_is_read_from_the_x86_flags(tmp_path: Path) -> None:
    spr = read_cpu_features(machine(tmp_path / "a", "sapphire-rapids"))
    desktop = read_cpu_features(machine(tmp_path / "b", "avx2-desktop"))
    assert spr.amx and {"amx_tile", "amx_int8", "avx512f"} <= spr.flags
    assert not desktop.amx and "avx2" in desktop.flags and "avx512f" not in desktop.flags


def test_arm_features_and_core_parts_are_read(tmp_path: Path) -> None:
    rk3588 = read_cpu_features(machine(tmp_path, "rk3588"))
    assert rk3588.parts == ("0xd05",) * 4 + ("0xd0b",) * 4  # 4x Cortex-A55, 4x Cortex-A76
    assert {"asimd", "asimddp", "fphp"} <= rk3588.flags and not rk3588.amx


def test_no_cpuinfo_means_no_known_features(tmp_path: Path) -> None:
    assert read_cpu_features(tmp_path) == CpuFeatures()


@pytest.mark.parametrize(("name", "expected"), [
    ("sapphire-rapids", RepackChoice(False, "cpu has AMX")),
    ("avx2-desktop", RepackChoice(True, "auto")),
    ("rk3588", RepackChoice(True, "auto")),  # the repacked Q4_0 kernels are the fast path on ARM: kept on
])
def test_auto_turns_the_repack_off_only_where_the_cpu_has_amx(tmp_path: Path, name: str, expected: RepackChoice) -> None:
    assert choose_repack("auto", read_cpu_features(machine(tmp_path, name))) == expected


def test_the_setting_overrides_auto_and_a_safe_reload_overrides_both(tree: tuple[str, Path]) -> None:
    features = read_cpu_features(tree[1])
    assert choose_repack("on", features) == RepackChoice(True, "RK_LLAMA_REPACK=on")
    assert choose_repack("off", features) == RepackChoice(False, "RK_LLAMA_REPACK=off")
    for setting in ("auto", "on", "off"):
        assert choose_repack(setting, features, safe=True) == RepackChoice(False, "safe reload after an engine crash")


def test_the_choice_reads_as_status_shows_it() -> None:
    assert str(RepackChoice(False, "cpu has AMX")) == "off (cpu has AMX)"


def test_threads_per_machine(tree: tuple[str, Path]) -> None:
    name, root = tree
    assert choose_threads(root) == {"sapphire-rapids": 2, "avx2-desktop": 4, "rk3588": 4}[name]


def test_rk_llama_repack_is_a_setting_with_three_values() -> None:
    assert Settings.from_env({}).llama_repack == "auto"
    assert Settings.from_env({"RK_LLAMA_REPACK": "off"}).llama_repack == "off"
    with pytest.raises(ValueError, match="RK_LLAMA_REPACK"):
        Settings.from_env({"RK_LLAMA_REPACK": "maybe"})
