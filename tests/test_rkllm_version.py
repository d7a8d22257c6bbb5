"""Which header a librkllmrt.so gets bound with, read the way shipped builds store their version.

The doubles store it like a real build (strings of a 1.2.1b1 aarch64 library): the init banner is a
format string, the version a literal of its own, and an `RKLLM SDK (version: ...)` line; each double
leaves out or contradicts one of them.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from test_rkllm_backend import chat, manifest

from rk.daemon.backends.base import RkllmOptions, RunnerConfig
from rk.daemon.backends.rkllm import load
from rk.daemon.backends.rkllm._lib import EXPORTS
from rk.daemon.backends.rkllm._version import read_stored, stored_version
from rk.daemon.errors import RkError

from native_build import rkllm_libs  # noqa: F401  (fixture)


def loaded(tmp_path: Path, lib: Path, setting: str | None = None, **params: str) -> tuple[str, str | None, str, str]:
    """(abi, version, source, reply to a chat) of a model loaded over `lib`."""
    m = load(manifest(tmp_path, **params), RunnerConfig(rkllm=RkllmOptions(lib=str(lib), version=setting)))
    try:
        return m.detected.abi, m.detected.version, m.detected.source, chat(m, "works")[0].text
    finally:
        m.close()


@pytest.mark.parametrize("double,expected", [
    ("1.2", ("1.2", "1.2.1", "sdk line + literal")),
    ("1.3", ("1.3", "1.3.0", "sdk line + literal")),
    ("sdk-only", ("1.2", "1.2.2", "sdk line")),
    ("literal-only", ("1.3", "1.3.0", "literal")),
])
def test_the_version_is_read_from_the_sdk_line_or_the_literal(double: str, expected: tuple[str, str, str],
                                                              tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    assert loaded(tmp_path, rkllm_libs[double]) == (*expected, "works ")


def test_the_banner_is_a_format_string_in_the_library(rkllm_libs: dict[str, Path]) -> None:
    """What makes a banner regex useless on a real file: the double stores it the same way."""
    data = rkllm_libs["1.3"].read_bytes()
    assert b"rkllm-runtime version: %s, rknpu driver version: %s, platform: %s" in data
    assert b"rkllm-runtime version: 1.3.0" not in data


def test_no_version_at_all_needs_the_setting(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match=r"stores no version .* or set RK_RKLLM_VERSION=1.2\|1.3") as e:
        loaded(tmp_path, rkllm_libs["silent"])
    assert e.value.code == "model_failed"
    assert loaded(tmp_path, rkllm_libs["silent"], "1.3") == ("1.3", None, "setting", "works ")
    assert loaded(tmp_path, rkllm_libs["silent"], runtime="1.3") == ("1.3", None, "setting", "works ")


def test_two_conflicting_literals_are_refused_unless_the_setting_picks_one(tmp_path: Path,
                                                                           rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match=r"several version literals \(1\.2\.2, 1\.3\.0\).*install librkllmrt.so"):
        loaded(tmp_path, rkllm_libs["two-literals"])
    assert loaded(tmp_path, rkllm_libs["two-literals"], "1.3")[0] == "1.3"


def test_an_sdk_line_that_contradicts_the_literal_is_refused(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match=r"says version 1\.3\.0 in its SDK line but 1\.2\.3 in its version literal"):
        loaded(tmp_path, rkllm_libs["sdk-vs-literal"])


def test_a_beta_is_refused_with_the_remedy(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match=r"runtime 1\.2\.1b1, a beta .* install librkllmrt.so unmodified"):
        loaded(tmp_path, rkllm_libs["beta"])
    with pytest.raises(RkError, match="a beta"):  # an explicit setting does not make a beta's structs right
        loaded(tmp_path, rkllm_libs["beta"], "1.2")


def test_unsupported_versions_and_conflicting_choices_are_refused(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match="runtime 1.2.0; supported"):
        loaded(tmp_path, rkllm_libs["1.2.0"])
    with pytest.raises(RkError, match="use 1.2 or 1.3"):
        loaded(tmp_path, rkllm_libs["1.3"], "2.0")
    with pytest.raises(RkError, match="asks for runtime 1.3 but RK_RKLLM_VERSION says 1.2"):
        loaded(tmp_path, rkllm_libs["1.3"], "1.2", runtime="1.3")


@pytest.mark.parametrize("binding,library", [("1.2", "1.3"), ("1.3", "1.2")])
def test_a_binding_pointed_at_the_other_runtime_is_refused(binding: str, library: str, tmp_path: Path,
                                                           rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match=f"refusing to bind the {binding} header.*RK_RKLLM_VERSION=1.2\\|1.3.* to {library}"):
        loaded(tmp_path, rkllm_libs[library], binding)
    with pytest.raises(RkError, match="refusing"):
        loaded(tmp_path, rkllm_libs[library], runtime=binding)


@pytest.mark.parametrize("double", ["1.2", "1.3"])
def test_the_doubles_export_the_whole_header(double: str, rkllm_libs: dict[str, Path]) -> None:
    import ctypes

    lib = ctypes.CDLL(str(rkllm_libs[double]))
    assert [name for name in EXPORTS if not hasattr(lib, name)] == []
    assert len(EXPORTS) == 15


# ---- the reading itself, over bytes laid out like a real library's strings --------------------------

def stored(tmp_path: Path, data: bytes) -> tuple[str | None, str]:
    f = tmp_path / "lib.so"
    f.write_bytes(data)
    return stored_version(f, read_stored(f))


def test_strings_of_a_real_build(tmp_path: Path) -> None:
    data = (b"\x7fELF\x00\x00I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n\x00"
            b"0.9.7\x001.2.1\x00RKLLM SDK (version: 1.2.1 | target: Linux | build: 27637c95 )\x00")
    assert stored(tmp_path, data) == ("1.2.1", "sdk line + literal")


@pytest.mark.parametrize("data,expected", [
    (b"\x00RKLLM SDK (version: 1.3.1 | target: Linux)\x00", ("1.3.1", "sdk line")),
    (b"\x00x\x001.3.0\x00y\x00", ("1.3.0", "literal")),
    (b"\x001.2.2\x001.3.0\x00", (None, "several version literals")),  # back to back, sharing one NUL
    (b"\x000.9.8\x00", (None, "stores no version")),  # a driver version is not the runtime's
    (b"\x00v1.3.0 \x00", (None, "stores no version")),  # not a standalone literal
])
def test_reading_versions_from_bytes(data: bytes, expected: tuple[str | None, str], tmp_path: Path) -> None:
    version, why = stored(tmp_path, data)
    assert version == expected[0] and expected[1] in why
