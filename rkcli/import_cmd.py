"""`rk import FILE --name NAME:TAG`: register a local model file in the models directory.

A `.gguf` runs on the CPU through llama.cpp (family, quantisation, context and whether it is an
embedding model are read from its header); a converted `.rkllm` runs on the NPU.

The file is hard-linked when it can be (same filesystem; a multi-GB model is not duplicated), else copied.
The daemon picks the model up on the next request; no restart needed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from rk.daemon.models import Manifest


def _place(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def import_model(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="A .gguf file (CPU, llama.cpp) or a converted .rkllm file (NPU)."),
    name: str = typer.Option(..., "--name", help="Register it as NAME:TAG, e.g. qwen3:0.6b."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", exists=True, file_okay=False,
                                             help="HuggingFace tokenizer directory: prompts are rendered with its chat template and sent as tokens."),
    context: Optional[int] = typer.Option(None, "--context", min=16, help="Context length (.rkllm: max_context_len, default 4096; .gguf: default from the file)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="RKLLM runtime the model was converted for: 1.2 or 1.3 (default: detected from the library)."),
    embed: bool = typer.Option(False, "--embed", help="An embedding model (last hidden layer) instead of a chat model."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Embedding pooling: last (default) or mean."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", envvar="RK_MODELS", help="Models directory (default: the daemon's)."),
    force: bool = typer.Option(False, "--force", help="Replace a model of the same name."),
) -> None:
    """Register a .gguf model (CPU) or a .rkllm model and optionally its tokenizer (NPU) so `rk serve` can run it."""
    from rk.daemon.errors import RkError
    from rk.daemon.models import MANIFEST, Manifest, ModelStore
    from rk.daemon.settings import default_models_dir

    def fail(message: str) -> typer.Exit:
        typer.echo(f"rk: {message}", err=True)
        return typer.Exit(1)

    if path.suffix not in (".rkllm", ".gguf"):
        raise fail(f"{path} is neither a .gguf nor a .rkllm file")
    gguf = path.suffix == ".gguf"
    if gguf and (tokenizer is not None or runtime is not None):
        raise fail("--tokenizer and --runtime apply only to .rkllm models (a GGUF carries its own tokenizer)")
    if runtime not in (None, "1.2", "1.3"):
        raise fail(f"--runtime must be 1.2 or 1.3, not {runtime!r}")
    if pooling is not None and not embed and not gguf:
        raise fail("--pooling applies only with --embed (or to a .gguf, whose chat model also embeds)")
    if pooling not in (None, "last", "mean"):
        raise fail(f"--pooling must be last or mean, not {pooling!r}")
    store = ModelStore(models_dir or default_models_dir(), bundled=False)
    try:
        target = store.model_dir(name)
    except RkError as e:
        raise fail(e.message) from None
    if (target / MANIFEST).exists() and not force:
        raise fail(f"model '{name}' already exists (use --force to replace it)")
    if gguf:
        try:
            manifest = gguf_manifest(path, name, context, embed, pooling)
        except RkError as e:
            raise fail(e.message) from None
    target.mkdir(parents=True, exist_ok=True)
    _place(path.resolve(), target / path.name)
    if gguf:
        saved = store.save(manifest)
        typer.echo(f"imported {saved.name} ({saved.kind}, {saved.family or '?'} {saved.parameter_size} {saved.quantization}, "
                   f"context {saved.context_length}, {saved.size / 2**20:.0f} MB) into {saved.dir}")
        return
    files = {"model": path.name}
    if tokenizer is not None:
        shutil.rmtree(target / "tokenizer", ignore_errors=True)
        shutil.copytree(tokenizer, target / "tokenizer")
        files["tokenizer"] = "tokenizer"
    params: dict[str, object] = {"runtime": runtime} if runtime else {}
    if embed:
        params["pooling"] = pooling or "last"
    saved = store.save(Manifest(name=name, backend="rkllm", kind="embed" if embed else "chat", files=files,
                                context_length=context or 4096, format="rkllm", params=params))
    typer.echo(f"imported {saved.name} ({saved.kind}, {saved.size / 2**20:.0f} MB) into {saved.dir}")


def gguf_manifest(path: Path, name: str, context: int | None, embed: bool, pooling: str | None) -> Manifest:
    """A llamacpp manifest for a GGUF file, from its header; `--embed`/`--pooling` override what it says."""
    from rk.daemon.gguf_info import read_gguf_info
    from rk.daemon.models import Manifest

    info = read_gguf_info(path)
    kind = "embed" if embed else info.kind
    params: dict[str, object] = {}
    if pooling or info.pooling:
        params["pooling"] = pooling or info.pooling
    return Manifest(name=name, backend="llamacpp", kind=kind, files={"gguf": path.name},
                    context_length=context or info.context_length, family=info.architecture,
                    parameter_size=info.parameter_size, quantization=info.quantization, format="gguf", params=params)
