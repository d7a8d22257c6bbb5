"""`rk import` registers a .rkllm model that the rkllm backend then loads and runs (over the 1.3 double)."""
from __future__ import annotations

import threading
from pathlib import Path

import typer
from typer.testing import CliRunner

from native_build import rkllm_libs  # noqa: F401  (fixture)
from rk.daemon.backends.base import GenRequest, RunnerConfig
from rk.daemon.backends.rkllm import load
from rk.daemon.models import ModelStore
from rk.import_cmd import import_model
from test_rkllm_backend import Recorder


def run(*args: str) -> object:
    app = typer.Typer()
    app.command()(import_model)
    return CliRunner().invoke(app, list(args))


def test_import_writes_a_manifest_the_backend_can_run(tmp_path: Path, rkllm_libs: dict[str, Path]) -> None:
    src = tmp_path / "qwen.rkllm"
    src.write_bytes(b"RKLLM fake weights")
    models = tmp_path / "models"
    res = run(str(src), "--name", "Qwen3:0.6B", "--context", "1024", "--runtime", "1.3", "--models-dir", str(models))
    assert res.exit_code == 0, res.output
    m = ModelStore(models, bundled=False).get("qwen3:0.6b")
    assert (m.backend, m.kind, m.context_length, m.params) == ("rkllm", "chat", 1024, {"runtime": "1.3"})
    assert m.path("model").read_bytes() == src.read_bytes()
    model = load(m, RunnerConfig(rkllm_lib=str(rkllm_libs["1.3"])))
    try:
        sink = Recorder()
        model.generate(GenRequest(messages=[{"role": "user", "content": "hi there"}]), sink, threading.Event())
    finally:
        model.close()
    assert sink.text == "hi there "
    again = run(str(src), "--name", "qwen3:0.6b", "--models-dir", str(models))
    assert again.exit_code == 1 and "already exists" in again.output


def test_import_embed_with_pooling_and_tokenizer(tmp_path: Path) -> None:
    src = tmp_path / "emb.rkllm"
    src.write_bytes(b"x")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    res = run(str(src), "--name", "emb:1", "--embed", "--pooling", "mean", "--tokenizer", str(tok), "--models-dir", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    m = ModelStore(tmp_path / "m", bundled=False).get("emb:1")
    assert m.kind == "embed" and m.params == {"pooling": "mean"} and m.path("tokenizer").joinpath("tokenizer.json").exists()


def test_import_refuses_bad_input(tmp_path: Path) -> None:
    src = tmp_path / "x.rkllm"
    src.write_bytes(b"x")
    other = tmp_path / "x.bin"
    other.write_bytes(b"x")
    d = str(tmp_path / "m")
    assert "neither a .gguf nor a .rkllm" in run(str(other), "--name", "a:b", "--models-dir", d).output
    assert "1.2 or 1.3" in run(str(src), "--name", "a:b", "--runtime", "1.1", "--models-dir", d).output
    assert "only with --embed" in run(str(src), "--name", "a:b", "--pooling", "mean", "--models-dir", d).output
    assert "invalid model name" in run(str(src), "--name", "../evil", "--models-dir", d).output
