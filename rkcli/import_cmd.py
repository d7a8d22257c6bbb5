"""`rk import PATH.rkllm --name NAME:TAG`: register a converted RKLLM model in the models directory.

The file is hard-linked when it can be (same filesystem; a multi-GB model is not duplicated), else copied.
The daemon picks the model up on the next request; no restart needed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import typer


def _place(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def import_model(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The converted .rkllm file."),
    name: str = typer.Option(..., "--name", help="Register it as NAME:TAG, e.g. qwen3:0.6b."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", exists=True, file_okay=False,
                                             help="HuggingFace tokenizer directory: prompts are rendered with its chat template and sent as tokens."),
    context: int = typer.Option(4096, "--context", min=16, help="Context length (max_context_len; at most the model's conversion limit)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="RKLLM runtime the model was converted for: 1.2 or 1.3 (default: detected from the library)."),
    embed: bool = typer.Option(False, "--embed", help="An embedding model (last hidden layer) instead of a chat model."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Embedding pooling: last (default) or mean."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", envvar="RK_MODELS", help="Models directory (default: the daemon's)."),
    force: bool = typer.Option(False, "--force", help="Replace a model of the same name."),
) -> None:
    """Register a .rkllm model (and optionally its tokenizer) so `rk serve` can run it on the NPU."""
    from rk.daemon.errors import RkError
    from rk.daemon.models import MANIFEST, Manifest, ModelStore
    from rk.daemon.settings import default_models_dir

    def fail(message: str) -> typer.Exit:
        typer.echo(f"rk: {message}", err=True)
        return typer.Exit(1)

    if path.suffix != ".rkllm":
        raise fail(f"{path} is not a .rkllm file")
    if runtime not in (None, "1.2", "1.3"):
        raise fail(f"--runtime must be 1.2 or 1.3, not {runtime!r}")
    if pooling is not None and not embed:
        raise fail("--pooling applies only with --embed")
    if pooling not in (None, "last", "mean"):
        raise fail(f"--pooling must be last or mean, not {pooling!r}")
    store = ModelStore(models_dir or default_models_dir(), bundled=False)
    try:
        target = store.model_dir(name)
    except RkError as e:
        raise fail(e.message) from None
    if (target / MANIFEST).exists() and not force:
        raise fail(f"model '{name}' already exists (use --force to replace it)")
    target.mkdir(parents=True, exist_ok=True)
    _place(path.resolve(), target / path.name)
    files = {"model": path.name}
    if tokenizer is not None:
        shutil.rmtree(target / "tokenizer", ignore_errors=True)
        shutil.copytree(tokenizer, target / "tokenizer")
        files["tokenizer"] = "tokenizer"
    params: dict[str, object] = {"runtime": runtime} if runtime else {}
    if embed:
        params["pooling"] = pooling or "last"
    saved = store.save(Manifest(name=name, backend="rkllm", kind="embed" if embed else "chat", files=files,
                                context_length=context, format="rkllm", params=params))
    typer.echo(f"imported {saved.name} ({saved.kind}, {saved.size / 2**20:.0f} MB) into {saved.dir}")
