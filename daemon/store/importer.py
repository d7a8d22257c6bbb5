"""Register a model file that is already on this machine (`rk import`), into the store the daemon uses:
a `.gguf` runs on the CPU through llama.cpp (facts read from its header), a converted `.rkllm` on the NPU.

The daemon does the work, not the CLI, so the model lands in the store the daemon really serves
(a system service's `/var/lib/rk/models`, a `--models-dir`, another user's daemon reached by socket).
The file is hard-linked when it can be (same filesystem; a multi-GB model is not duplicated), else copied.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rk.daemon.errors import RkError
from rk.daemon.store import gguf_meta
from rk.daemon.store.models import CAPABILITIES, MANIFEST, Manifest, ModelStore
from rk.daemon.store.pull.manifests import gguf_manifest
from rk.daemon.store.template_facts import from_template
from rk.daemon.store.templates import hf_template


@dataclass(frozen=True)
class ImportRequest:
    path: str  # absolute, on the daemon's machine
    name: str
    capabilities: tuple[str, ...] = ()  # besides completion (or embedding with `embed`)
    context: int | None = None  # .rkllm: max_context_len (default 4096); .gguf: from the file
    runtime: str | None = None  # "1.2" / "1.3"
    embed: bool = False  # an embedding-only model
    pooling: str | None = None  # last / mean
    tokenizer: str | None = None  # a Hugging Face tokenizer directory
    force: bool = False


def _place(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check(req: ImportRequest) -> Path:
    src = Path(req.path)
    if not src.is_absolute() or not src.is_file():
        raise RkError("bad_request", f"{req.path}: no such file on the daemon's machine", param="path")
    if src.suffix not in (".rkllm", ".gguf"):
        raise RkError("bad_request", f"{src} is neither a .gguf nor a .rkllm file", param="path")
    if src.suffix == ".gguf" and (req.tokenizer is not None or req.runtime is not None):
        raise RkError("bad_request", "tokenizer and runtime apply only to .rkllm models (a GGUF carries its own tokenizer)")
    if req.runtime not in (None, "1.2", "1.3"):
        raise RkError("bad_request", f"runtime must be 1.2 or 1.3, not {req.runtime!r}", param="runtime")
    if req.pooling not in (None, "last", "mean"):
        raise RkError("bad_request", f"pooling must be last or mean, not {req.pooling!r}", param="pooling")
    unknown = [c for c in req.capabilities if c not in CAPABILITIES]
    if unknown:
        raise RkError("bad_request", f"unknown capabilities {', '.join(unknown)}; known: {', '.join(CAPABILITIES)}",
                      param="capabilities")
    if req.tokenizer is not None and not Path(req.tokenizer).is_dir():
        raise RkError("bad_request", f"{req.tokenizer}: no such tokenizer directory", param="tokenizer")
    return src


def import_model(store: ModelStore, req: ImportRequest) -> Manifest:
    """The file registered as a `llamacpp` (GGUF) or `rkllm` model, with the request's settings."""
    src = _check(req)
    target = store.model_dir(req.name)
    if (target / MANIFEST).exists() and not req.force:
        raise RkError("bad_request", f"model '{req.name}' already exists (use --force to replace it)", param="name")
    meta = gguf_meta.read(src) if src.suffix == ".gguf" else None  # a broken GGUF is refused before anything is written
    target.mkdir(parents=True, exist_ok=True)
    _place(src, target / src.name)
    if meta is not None:
        m = gguf_manifest(req.name, target, src.name)
        if req.embed:
            m.capabilities = ("embedding",)
        m.capabilities = tuple(dict.fromkeys(m.capabilities + req.capabilities))
        m.context_length = req.context or m.context_length
        if req.pooling:
            m.params["pooling"] = req.pooling
        return store.save(m)
    files = {"model": src.name}
    if req.tokenizer is not None:
        shutil.rmtree(target / "tokenizer", ignore_errors=True)
        shutil.copytree(req.tokenizer, target / "tokenizer")
        files["tokenizer"] = "tokenizer"
    params: dict[str, object] = {"runtime": req.runtime} if req.runtime else {}
    if req.pooling or req.embed:
        params["pooling"] = req.pooling or "last"
    caps = ("embedding",) if req.embed else ("completion", *req.capabilities)
    if not req.embed and not req.capabilities and "tokenizer" in files:  # the shipped template says what it takes
        caps = from_template(hf_template(target / "tokenizer"))
    return store.save(Manifest(name=req.name, backend="rkllm", capabilities=caps, files=files,
                               context_length=req.context or 4096, format="rkllm", params=params))
