"""`/api/create`: a model from uploaded blobs (a GGUF or .rkllm file) or from an existing model, with its settings.

Blob files are hard-linked into the new model's directory, so creating costs no copy; re-creating a
name replaces it, and blobs the old version held that nobody else uses are removed.
"""
from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Callable

from rk.daemon.errors import RkError
from rk.daemon.store.gguf_meta import is_gguf
from rk.daemon.store.modelfile import CreateSpec
from rk.daemon.store.models import MANIFEST, Manifest, ModelStore, normalize_name
from rk.daemon.store.pull.blobs import Blobs
from rk.daemon.store.pull.manifests import gguf_manifest, rkllm_manifest
from rk.daemon.store.pull.refs import Digest, safe_path


def _from_files(store: ModelStore, blobs: Blobs, spec: CreateSpec) -> tuple[Manifest, list[str]]:
    digests = {name: Digest("sha256", hex_) for name, hex_ in spec.files}
    for name, d in digests.items():
        safe_path(name)
        if not blobs.has(d):
            raise RkError("bad_request", f"blob {d.wire} ({name}) is not on this daemon: upload it with "
                          f"POST /api/blobs/{d.wire} first", param="files")
    gguf = [n for n, d in digests.items() if "mmproj" not in n.lower() and is_gguf(blobs.path(d))]
    rkllm = [n for n in digests if n.lower().endswith(".rkllm")]
    if len(gguf) + len(rkllm) != 1:
        raise RkError("bad_request", "'files' must hold exactly one model file (a GGUF, or an .rkllm)", param="files")
    model = (gguf + rkllm)[0]
    dest = {n: PurePosixPath(n).name if n == model or n.lower().endswith((".gguf", ".rkllm"))
            else f"tokenizer/{PurePosixPath(n).name}" for n in digests}  # tokenizer files go where rkllm looks
    if gguf and not dest[model].lower().endswith(".gguf"):
        dest[model] += ".gguf"  # a blob sent as "model" (legacy FROM @sha256:…): named by what it is
    model_file, directory = dest[model], store.model_dir(spec.model)
    for n, d in digests.items():
        blobs.link(d, directory / dest[n])
    if gguf:
        mmproj = next((dest[n] for n in digests if "mmproj" in n.lower()), None)
        manifest = gguf_manifest(spec.model, directory, model_file, mmproj)
    else:
        has_tok = any(v in ("tokenizer/tokenizer.json", "tokenizer/tokenizer.model") for v in dest.values())
        manifest = rkllm_manifest(spec.model, directory, model_file, "tokenizer" if has_tok else None)
    return manifest, [f"using existing layer {d.wire}" for d in digests.values()]


def _settings(spec: CreateSpec) -> Callable[[Manifest], None]:
    """What the request sets on the new model (defaults, system, template, license, messages)."""
    defaults = spec.defaults  # a malformed parameter is refused here, before anything is written

    def amend(manifest: Manifest) -> None:
        manifest.defaults = {**manifest.defaults, **defaults}
        for key in ("system", "template", "license"):
            if getattr(spec, key) is not None:
                setattr(manifest, key, getattr(spec, key))
        if spec.messages:
            manifest.messages = [{"role": r, "content": c} for r, c in spec.messages]
    return amend


def _from_model(store: ModelStore, spec: CreateSpec, amend: Callable[[Manifest], None]) -> list[str]:
    """A copy of an existing model with new settings; a replaced name is swapped only once the copy is
    complete, so a failure never loses it (as Ollama, re-creating a name replaces it)."""
    base = store.get(spec.base or "")
    if normalize_name(spec.model) == normalize_name(base.name):
        base.name = spec.model  # re-created: listed as typed this time
        amend(base)
        store.save(base)
    else:
        store.copy(base.name, spec.model, replace=True, amend=amend)
    return ["using existing layers", "writing manifest"]


def create_sync(store: ModelStore, blobs: Blobs, spec: CreateSpec) -> list[str]:
    """Write the model; returns the statuses to report before `success`."""
    amend = _settings(spec)
    directory = store.model_dir(spec.model)
    before = blobs.inodes(directory)  # what a replaced version held, for pruning
    if not spec.files:
        statuses = _from_model(store, spec, amend)
        blobs.prune(before)
        return statuses
    manifest, statuses = _from_files(store, blobs, spec)
    if (directory / MANIFEST).exists():  # a replaced model: drop files the new one does not name
        keep = {MANIFEST} | {str(PurePosixPath(v)) for v in manifest.files.values()}
        for p in sorted(directory.rglob("*"), reverse=True):
            rel = p.relative_to(directory).as_posix()
            if p.is_file() and rel not in keep and not any(rel.startswith(k + "/") for k in keep):
                p.unlink()
    amend(manifest)
    store.save(manifest)
    blobs.prune(before)
    return statuses + ["writing manifest"]


async def create(store: ModelStore, blobs: Blobs, spec: CreateSpec) -> list[str]:
    return await asyncio.to_thread(create_sync, store, blobs, spec)
