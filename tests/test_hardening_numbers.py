"""Issue 15, items 10 and 12: non-finite durations and numbers are refused everywhere, and sampling
options are kept inside what any sampler can compute with."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rk.daemon.backends.sampling import next_token
from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.families.ollama import adapter as ollama
from rk.daemon.settings import Settings

from daemon_proc import DaemonProc

NON_FINITE = ["nan", "NaN", "inf", "-inf", "+Infinity", "1e999", "9" * 400 + "h"]


@pytest.mark.parametrize("value", NON_FINITE, ids=lambda v: v[:8])
def test_non_finite_keep_alive_is_refused_on_every_route(syn: DaemonProc, value: str) -> None:
    with httpx.Client(base_url=syn.base_url, timeout=10) as h:
        for path, body in (("/api/generate", {"model": "syn:chat"}),
                           ("/api/generate", {"model": "syn:chat", "prompt": "a", "stream": False}),
                           ("/api/chat", {"model": "syn:chat", "messages": [{"role": "user", "content": "a"}], "stream": False}),
                           ("/api/embed", {"model": "syn:embed", "input": "a"}),
                           ("/api/embeddings", {"model": "syn:embed", "prompt": "a"})):
            r = h.post(path, json={**body, "keep_alive": value})
            assert r.status_code == 400 and "keep_alive" in r.json()["error"], (path, r.status_code, r.text)
        assert h.get("/api/ps").status_code == 200


def test_finite_keep_alive_still_works(syn: DaemonProc) -> None:
    with httpx.Client(base_url=syn.base_url, timeout=10) as h:
        for value in ("5m", "-1", -1, "1h30m", 0.5):
            r = h.post("/api/generate", json={"model": "syn:chat", "keep_alive": value})
            assert r.status_code == 200, (value, r.text)
        assert h.post("/api/generate", json={"model": "syn:chat", "keep_alive": 0}).status_code == 200


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_options_are_refused(value: float) -> None:
    """orjson never yields these, but every adapter reads numbers through fields.number."""
    for key in ("temperature", "top_p", "repeat_penalty"):
        with pytest.raises(RkError) as e:
            f.gen_options({key: value})
        assert e.value.code == "bad_request" and e.value.param == key
    with pytest.raises(RkError):
        ollama.keep_alive(value)
    with pytest.raises(RkError):
        f.number({"keep_alive": value}, "keep_alive")


@pytest.mark.parametrize("env", ["nan", "inf", "-inf"])
def test_non_finite_settings_are_refused(env: str) -> None:
    with pytest.raises(ValueError, match="RK_KEEP_ALIVE"):
        Settings.from_env({"RK_KEEP_ALIVE": env})
    with pytest.raises(ValueError, match="RK_BODY_TIMEOUT"):
        Settings(body_timeout_s=float(env))


@pytest.mark.parametrize("args, env, says", [
    (["--keep-alive", "nan"], {}, "RK_KEEP_ALIVE must be a finite number, not nan"),
    (["--keep-alive", "inf"], {}, "RK_KEEP_ALIVE must be a finite number, not inf"),
    ([], {"RK_BODY_TIMEOUT": "nan"}, "RK_BODY_TIMEOUT must be a finite number, not nan"),
    ([], {"RK_MAX_QUEUE": "lots"}, "RK_MAX_QUEUE must be a whole number, not 'lots'"),
], ids=["flag-nan", "flag-inf", "env-nan", "env-word"])
def test_rk_serve_with_a_bad_number_is_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str],
                                                             says: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    full.update(env, RK_SOCKET=str(tmp_path / "rk.sock"), RK_MODELS=str(tmp_path / "models"))
    res = subprocess.run([sys.executable, "-m", "rk", "serve", *args], capture_output=True, text=True, env=full,
                         timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [f"rk serve: {says}"], res.stderr
    assert not (tmp_path / "rk.sock").exists()


def test_tiny_temperature_is_greedy_and_tiny_penalty_is_refused() -> None:
    assert f.gen_options({"temperature": 1e-45}).temperature == 0.0
    assert f.gen_options({"temperature": 0.5}).temperature == 0.5
    assert f.gen_options({"repeat_penalty": 0}).repeat_penalty == 1.0
    with pytest.raises(RkError) as e:
        f.gen_options({"repeat_penalty": 1e-40})
    assert e.value.code == "bad_request" and "repeat_penalty" in e.value.message


@settings(max_examples=300, deadline=None)
@given(options=st.fixed_dictionaries({}, optional={
    "temperature": st.floats(min_value=0, max_value=1e3),
    "repeat_penalty": st.floats(min_value=0, max_value=1e3),
    "top_p": st.floats(min_value=0, max_value=1),
    "top_k": st.integers(min_value=0, max_value=100)}),
    scale=st.sampled_from([1.0, 30.0, 600.0]), seed=st.integers(0, 2**16))
def test_every_accepted_option_set_samples_a_token(options: dict[str, Any], scale: float, seed: int) -> None:
    """Whatever gen_options lets through, the sampler computes with: no inf/nan probabilities."""
    try:
        opts = f.gen_options(options)
    except RkError:
        return
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(500, generator=gen) * scale
    assert 0 <= next_token(logits, opts, history=[1, 2, 3, 400], gen=gen) < 500


@pytest.mark.slow
def test_extreme_sampling_values_on_a_real_model(real_daemon: DaemonProc) -> None:
    """On the hf backend these crashed sampling with HTTP 500 (probability tensor contains inf/nan)."""
    with httpx.Client(base_url=real_daemon.base_url, timeout=120) as h:
        body = {"model": "smollm2:135m", "prompt": "Say hi.", "stream": False}
        r = h.post("/api/generate", json={**body, "options": {"temperature": 1e-45, "num_predict": 4}})
        assert r.status_code == 200, r.text
        r = h.post("/api/generate", json={**body, "options": {"repeat_penalty": 1e-40, "num_predict": 4}})
        assert r.status_code == 400 and "repeat_penalty" in r.json()["error"], r.text
        r = h.post("/api/generate", json={**body, "options": {"repeat_penalty": 0.01, "temperature": 0.01,
                                                              "num_predict": 4}})
        assert r.status_code == 200, r.text
