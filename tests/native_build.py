"""Builds the C doubles of librkllmrt.so (tests/native/) with gcc, once per test session.

Import the fixtures into a test module with `from native_build import rkllm_libs, rkllm_layout`.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon_proc import write_manifest

NATIVE = Path(__file__).parent / "native"
HEADERS = {"1.2": "rkllm_1_2.h", "1.3": "rkllm_1_3.h"}


@dataclass(frozen=True)
class Double:
    """One build of the double: its header, and the version strings it stores the way a shipped build does."""

    api: str
    sdk: str | None = None          # in "RKLLM SDK (version: X | target: Linux | build: ...)"
    literals: tuple[str, ...] = ()  # standalone NUL-terminated literals (the banner is a format string)


DOUBLES: dict[str, Double] = {
    "1.2": Double("1.2", "1.2.1", ("1.2.1",)),
    "1.3": Double("1.3", "1.3.0", ("1.3.0",)),
    "sdk-only": Double("1.2", "1.2.2"),            # detection from the SDK line alone
    "literal-only": Double("1.3", None, ("1.3.0",)),  # detection from the literal alone
    "silent": Double("1.3"),                       # no version string at all: needs an explicit choice
    "two-literals": Double("1.3", None, ("1.2.2", "1.3.0")),  # conflicting literals: refused
    "sdk-vs-literal": Double("1.3", "1.3.0", ("1.2.3",)),     # the two witnesses disagree: refused
    "beta": Double("1.2", "1.2.1b1", ("1.2.1b1",)),  # a beta (its header differs from 1.2.1): refused
    "1.2.0": Double("1.2", "1.2.0", ("1.2.0",)),   # a release whose callback returns void: refused
}


def _gcc(args: list[str]) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the RKLLM doubles")
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Werror", "-I", str(NATIVE), *args], check=True, capture_output=True)


def build_double(out: Path, name: str) -> Path:
    d = DOUBLES[name]
    lib = out / f"librkllmrt-{name}.so"
    defines = [f'-DRKLLM_HEADER="{HEADERS[d.api]}"'] + ([f'-DFAKE_SDK="{d.sdk}"'] if d.sdk else [])
    defines += [f'-DFAKE_LITERAL{"" if i == 0 else i + 1}="{v}"' for i, v in enumerate(d.literals)]
    _gcc(["-shared", "-fPIC", "-O1", *defines, str(NATIVE / "fake_rkllm.c"), "-o", str(lib)])
    return lib


def build_layout(out: Path, api: str) -> Path:
    exe = out / f"layout-{api}"
    _gcc([f'-DRKLLM_HEADER="{HEADERS[api]}"', str(NATIVE / "layout.c"), "-o", str(exe)])
    return exe


@pytest.fixture(scope="session")
def rkllm_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every double of DOUBLES by name."""
    out = tmp_path_factory.mktemp("rkllm-doubles")
    return {name: build_double(out, name) for name in DOUBLES}


@pytest.fixture(scope="session")
def rkllm_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The layout program's output per header version."""
    out = tmp_path_factory.mktemp("rkllm-layout")
    return {api: subprocess.run([str(build_layout(out, api))], check=True, capture_output=True, text=True).stdout
            for api in HEADERS}


def register_npu_models(models: Path) -> None:
    """`npu:chat` and `npu:embed` on the rkllm backend, each with a placeholder .rkllm file for the double."""
    write_manifest(models, "npu:chat", backend="rkllm", kind="chat", context_length=4096, files={"model": "m.rkllm"})
    write_manifest(models, "npu:embed", backend="rkllm", kind="embed", context_length=512, files={"model": "m.rkllm"},
                   params={"pooling": "mean"})
    for d in ("npu/chat", "npu/embed"):
        (models / d / "m.rkllm").write_bytes(b"RKLLM fake weights")
