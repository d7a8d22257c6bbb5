"""The rkllm backend bound directly to the C doubles of librkllmrt.so 1.2.1 and 1.3.0 (no daemon)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from rk.daemon.backends.base import RkllmOptions, RunnerConfig
from rk.daemon.backends.rkllm import load
from rk.daemon.backends.rkllm.backend import RkllmModel
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenOptions, GenSpec, Message
from rk.daemon.store.models import Manifest

from native_build import rkllm_libs  # noqa: F401  (fixture)

VERSIONS = ["1.2", "1.3"]


class Recorder:
    """A Sink that keeps what the backend reported."""

    def __init__(self) -> None:
        self.prefills: list[tuple[float, int]] = []
        self.pieces: list[str] = []

    def prefill(self, ms: float, tokens: int, cached: int = 0) -> None:
        self.prefills.append((ms, tokens))

    def token(self, text: str) -> None:
        self.pieces.append(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def manifest(tmp_path: Path, kind: str = "chat", **params: Any) -> Manifest:
    (tmp_path / "m.rkllm").write_bytes(b"RKLLM fake weights")
    caps = ("embedding",) if kind == "embed" else ("completion",)
    return Manifest(name="fake:test", backend="rkllm", capabilities=caps, files={"model": "m.rkllm"}, context_length=512,
                    params=params, dir=tmp_path)


@pytest.fixture(params=VERSIONS)
def model(request: pytest.FixtureRequest, tmp_path: Path, rkllm_libs: dict[str, Path]) -> Iterator[RkllmModel]:
    m = load(manifest(tmp_path), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[request.param]))))
    yield m
    m.close()


def chat(m: RkllmModel, text: str, stop: threading.Event | None = None, **options: Any) -> tuple[Recorder, Any]:
    sink = Recorder()
    result = m.generate(GenSpec(messages=(Message("user", text),), options=GenOptions(**options)),
                        sink, stop or threading.Event())
    return sink, result


def test_a_library_without_the_1_2_1_functions_is_refused(tmp_path: Path) -> None:
    libc = next(p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6")
                if Path(p).exists())
    with pytest.raises(RkError, match="not an RKLLM runtime >= 1.2.1"):
        load(manifest(tmp_path), RunnerConfig(rkllm=RkllmOptions(lib=libc)))


def test_a_missing_library_or_model_file_is_a_clear_error(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    with pytest.raises(RkError, match="RKLLM runtime not found"):
        load(manifest(tmp_path), RunnerConfig(rkllm=RkllmOptions(lib=str(tmp_path / "nope.so"))))
    m = manifest(tmp_path)
    (tmp_path / "m.rkllm").unlink()
    with pytest.raises(RkError, match="missing file"):
        load(m, RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.3"]))))


# ---- generation --------------------------------------------------------------------------------------

def test_multibyte_characters_are_joined_across_callbacks(model: RkllmModel) -> None:
    sink, result = chat(model, "héllo wörld 日本語 ok")
    assert sink.text == "héllo wörld 日本語 ok "
    assert "\ufffd" not in sink.text
    assert all(p for p in sink.pieces)
    # per word, the 1st multi-byte character comes split across two NORMAL callbacks (é, ö, 日) and the 2nd
    # as WAITING without text then NORMAL (本); each callback is a token: 5 + 5 + 6 + 2
    assert result.generate_tokens == 18 and result.finish_reason == "stop"


def test_perf_figures_come_from_finish(model: RkllmModel) -> None:
    sink, result = chat(model, "one two three")
    assert len(sink.prefills) == 1
    assert result.prefill_tokens == 3 and result.generate_tokens == 6
    assert result.memory_mb > 0 and result.generate_ms >= 0 and result.prefill_ms >= 0


def test_max_tokens_stops_with_length_and_the_kv_cache_is_cleared(model: RkllmModel) -> None:
    sink, result = chat(model, "a b c d e f g h", max_tokens=3)
    assert sink.text == "a b" and result.generate_tokens == 3 and result.finish_reason == "length"
    assert model._handle.kv_cache_size() == 0
    assert chat(model, "fresh start")[0].text == "fresh start "


def test_a_set_stop_event_pauses_the_run(model: RkllmModel) -> None:
    stop = threading.Event()
    stop.set()
    sink, result = chat(model, "a b c d", stop=stop)
    assert result.generate_tokens == 1 and sink.text == "a"


def test_runtime_error_fails_the_job_and_the_model_stays_usable(model: RkllmModel) -> None:
    with pytest.raises(RkError, match="reported an error") as e:
        chat(model, "please [[error]]")
    assert e.value.code == "model_failed"
    assert chat(model, "after error")[0].text == "after error "


@pytest.mark.parametrize("version", VERSIONS)
def test_abort_from_another_thread_stops_within_100_ms(version: str, tmp_path: Path, rkllm_libs: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_RKLLM_TOKEN_DELAY_MS", "20")
    m = load(manifest(tmp_path), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[version]))))
    aborted_at: list[float] = []

    class AbortAfterThree(Recorder):
        def token(self, text: str) -> None:
            super().token(text)
            if len(self.pieces) == 3:
                def later() -> None:
                    aborted_at.append(time.perf_counter())
                    m.abort()
                threading.Thread(target=later).start()

    try:
        sink = AbortAfterThree()
        m.generate(GenSpec(messages=(Message("user", " ".join(["w"] * 500)),)), sink, threading.Event())
        ended = time.perf_counter()
        assert aborted_at and ended - aborted_at[0] < 0.1
        assert len(sink.pieces) < 20
        assert chat(m, "next job")[0].text == "next job "  # the abort does not leak into the next run
    finally:
        m.close()


# ---- embeddings --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_embed_returns_unit_vectors_pooled_per_manifest(version: str, pooling: str, tmp_path: Path,
                                                        rkllm_libs: dict[str, Path]) -> None:
    m = load(manifest(tmp_path, "embed", pooling=pooling), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs[version]))))
    try:
        res = m.embed(["alpha beta", "gamma", "alpha beta"], truncate=True)
    finally:
        m.close()
    assert res.vectors.shape == (3, 16) and res.vectors.dtype == np.float32
    assert np.all(np.isfinite(res.vectors))  # copied inside the callback, before the double poisons the buffer
    assert np.allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(res.vectors[0], res.vectors[2]) and not np.allclose(res.vectors[0], res.vectors[1])
    assert res.tokens == [2, 1, 2]


def test_last_and_mean_pooling_differ(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    vecs = {}
    for pooling in ("last", "mean"):
        m = load(manifest(tmp_path, "embed", pooling=pooling), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.3"]))))
        try:
            vecs[pooling] = m.embed(["alpha beta gamma"], truncate=True).vectors[0]
            single = m.embed(["gamma"], truncate=True).vectors[0]
        finally:
            m.close()
    assert np.allclose(vecs["last"], single) and not np.allclose(vecs["mean"], single)


def test_embed_of_an_empty_text_is_refused(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    m = load(manifest(tmp_path, "embed"), RunnerConfig(rkllm=RkllmOptions(lib=str(rkllm_libs["1.2"]))))
    try:
        with pytest.raises(RkError) as e:
            m.embed(["  "], truncate=True)
    finally:
        m.close()
    assert e.value.code == "empty_input"
