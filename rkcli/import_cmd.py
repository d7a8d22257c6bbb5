"""`rk import FILE --name NAME:TAG`: register a local `.gguf` (CPU, llama.cpp) or converted `.rkllm` (NPU)
model with the daemon.

The daemon registers it in the models directory it really serves (a system service's, or another
`--socket`/`--host` daemon's on this machine), hard-linking the file when it can. It serves the model
on the next request; no restart needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rk.cliutil import run_client


def import_model(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="A .gguf file (CPU, llama.cpp) or a "
                                "converted .rkllm file (NPU)."),
    name: str = typer.Option(..., "--name", help="Register it as NAME:TAG, e.g. qwen3:0.6b."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", exists=True, file_okay=False,
                                             help="HuggingFace tokenizer directory: prompts are rendered with its chat template "
                                                  "and sent as tokens."),
    context: Optional[int] = typer.Option(None, "--context", min=16, help="Context length (.rkllm: max_context_len, default "
                                          "4096; .gguf: default from the file)."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="RKLLM runtime the model was converted for: 1.2 or 1.3 "
                                          "(default: detected from the library)."),
    capabilities: str = typer.Option("", "--capabilities", help="What the model can do besides chat and embeddings, "
                                     "comma-separated: tools, thinking, vision."),
    embed: bool = typer.Option(False, "--embed", help="An embedding-only model (last hidden layer); chat models embed too."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Embedding pooling: last (default) or mean."),
    force: bool = typer.Option(False, "--force", help="Replace a model of the same name."),
) -> None:
    """Register a .gguf model (CPU) or a .rkllm model and optionally its tokenizer (NPU) with the daemon."""
    req = {"path": str(path.resolve()), "name": name, "context": context, "runtime": runtime, "embed": embed,
           "pooling": pooling, "force": force, "tokenizer": str(tokenizer.resolve()) if tokenizer else None,
           "capabilities": [c.strip() for c in capabilities.split(",") if c.strip()]}
    info = run_client(ctx, lambda c: c.call("import", **{k: v for k, v in req.items() if v is not None}))
    typer.echo(f"imported {info['name']} ({', '.join(info['capabilities'])}, {info['size'] / 2**20:.0f} MB)")
