"""The board check script (`python -m rk.daemon.backends.rkllm.check`), run as a user runs it, over the doubles."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from native_build import rkllm_libs  # noqa: F401  (fixture)


def check(lib: Path, model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"FAKE_RKLLM_TOKEN_DELAY_MS": "2"}
    return subprocess.run([sys.executable, "-m", "rk.daemon.backends.rkllm.check", "--lib", str(lib), str(model), *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("double,version", [("1.2", "1.2.1"), ("1.3", "1.3.0")])
def test_the_check_prints_version_exports_sizes_and_runs(double: str, version: str, tmp_path: Path,
                                                         rkllm_libs: dict[str, Path]) -> None:
    model = tmp_path / "m.rkllm"
    model.write_bytes(b"RKLLM fake weights")
    res = check(rkllm_libs[double], model)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert f"OK runtime {version} from the sdk line + literal: binding the {double} header" in out
    assert "MISSING" not in out and "set_cross_attn_params" in out
    assert "DIFFERS" not in out and "RKLLMParam" in out
    assert "text: 'Say hello in five words. '" in out  # the double echoes
    assert "OK dim 16, tokens [5, 6]" in out
    assert "ms after rkllm_abort (4 pieces streamed)" in out


def test_the_check_says_what_to_do_when_the_version_is_unknown(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    model = tmp_path / "m.rkllm"
    model.write_bytes(b"x")
    res = check(rkllm_libs["silent"], model)
    assert res.returncode == 1 and "stores no version" in res.stdout and "RK_RKLLM_VERSION" in res.stdout
    res = check(rkllm_libs["silent"], model, "--runtime", "1.3")
    assert res.returncode == 0 and "OK runtime ? from the setting: binding the 1.3 header" in res.stdout
