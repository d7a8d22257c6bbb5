"""Hub model names (`hf.co/OWNER/REPO[:TAG]`) and which repo files a pull fetches. Pure logic, no I/O.

The TAG picks the model file: a GGUF quant (`:Q4_K_M`, any case) or a part of a file name
(`:rk3588-w8a8`). Without a TAG the repo's only model file is taken, else the one built for this
board's SoC, else the choices are listed in the error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from rk.daemon.errors import RkError
from rk.daemon.store.models import display_name

HUB_HOSTS = ("hf.co", "huggingface.co")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")
# Next to an .rkllm file, so the model renders prompts and runs with the network gone.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
                   "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")
Role = Literal["model", "mmproj", "tokenizer"]


@dataclass(frozen=True)
class HubRef:
    """A hub model as the user named it: `repo` keeps the hub's case, `name` is how rk registers it."""

    repo: str  # OWNER/REPO
    tag: str | None  # None: choose the file without a hint
    name: str  # as typed, with its tag: hf.co/Owner/Repo:TAG

    @property
    def key(self) -> str:
        """Two spellings of one name are one pull."""
        return self.name.lower()


def parse_ref(raw: str) -> HubRef | None:
    """`hf.co/OWNER/REPO[:TAG]` -> HubRef; None for a name that is not a hub name (a local model)."""
    text = raw.strip()
    host, _, rest = text.partition("/")
    if host.lower() not in HUB_HOSTS or not rest:
        return None
    repo, _, tag = rest.partition(":")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts) or ".." in repo:
        raise RkError("bad_request", f"invalid hub model name {raw!r}: use hf.co/OWNER/REPO[:TAG]", param="model")
    name = display_name(f"hf.co/{repo}" + (f":{tag}" if tag else ""))
    return HubRef(repo, tag if tag and tag.lower() != "latest" else None, name)


@dataclass(frozen=True)
class Digest:
    """A file's content hash as the hub states it: sha256 for LFS files, the git blob id for the others."""

    algo: Literal["sha256", "git"]
    hex: str

    def __post_init__(self) -> None:
        if not (_SHA256 if self.algo == "sha256" else _GIT_OID).match(self.hex):
            raise RkError("hub_unavailable", f"the hub gave a malformed {self.algo} digest {self.hex!r}")

    @property
    def wire(self) -> str:
        """`sha256:<hex>`, as Ollama's progress lines carry it."""
        return f"{self.algo}:{self.hex}"

    @property
    def filename(self) -> str:
        return f"{self.algo}-{self.hex}"


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    digest: Digest


@dataclass(frozen=True)
class Wanted:
    """One file to fetch: where it is in the repo and where it goes in the model's directory."""

    file: RepoFile
    role: Role
    dest: str  # relative to the model directory


def safe_path(path: str) -> PurePosixPath:
    """A repo file name, refused when absolute or climbing out (`..`): it must never steer a write."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or "\\" in path or any(part in ("..", ".", "") for part in path.split("/")):
        raise RkError("bad_request", f"refusing the repo file name {path!r}: absolute or with '..'")
    return p


def _is_model(path: str) -> bool:
    low = path.lower()
    return low.endswith(".rkllm") or (low.endswith(".gguf") and "mmproj" not in PurePosixPath(low).name)


def _matches_quant(path: str, tag: str) -> bool:
    stem = PurePosixPath(path).name.lower().rsplit(".", 1)[0]
    return re.search(rf"(^|[-._]){re.escape(tag.lower())}$", stem) is not None


def choose_model(files: list[RepoFile], ref: HubRef, soc: str) -> RepoFile:
    """The model file the TAG (or, without one, the SoC) picks; a clear error lists the choices otherwise."""
    models = sorted((f for f in files if _is_model(f.path)), key=lambda f: f.path)
    if not models:
        raise RkError("model_not_found", f"hf.co/{ref.repo} has no .gguf or .rkllm model file")
    names = ", ".join(f.path for f in models)
    if ref.tag:
        picked = [f for f in models if _matches_quant(f.path, ref.tag)] or \
                 [f for f in models if ref.tag.lower() in PurePosixPath(f.path).name.lower()]
        if len(picked) == 1:
            return picked[0]
        what = "several files" if picked else "no file"
        raise RkError("model_not_found" if not picked else "bad_request",
                      f"{what} in hf.co/{ref.repo} match ':{ref.tag}'; choose one of: {names}", param="model")
    if len(models) == 1:
        return models[0]
    for_soc = [f for f in models if soc and soc != "n/a" and soc.lower() in f.path.lower()]
    if len(for_soc) == 1:
        return for_soc[0]
    raise RkError("bad_request", f"hf.co/{ref.repo} has several model files; name one with :TAG (a quant such as "
                  f":Q4_K_M or a part of the file name): {names}", param="model")


def plan(files: list[RepoFile], ref: HubRef, soc: str) -> tuple[Wanted, ...]:
    """Everything to fetch for `ref`: the model file, a GGUF's projector, an .rkllm's tokenizer files."""
    for f in files:
        safe_path(f.path)
    model = choose_model(files, ref, soc)
    folder = str(PurePosixPath(model.path).parent)
    same_dir = [f for f in files if str(PurePosixPath(f.path).parent) == folder]
    out = [Wanted(model, "model", PurePosixPath(model.path).name)]
    if model.path.lower().endswith(".gguf"):
        projectors = sorted((f for f in same_dir if f.path.lower().endswith(".gguf") and "mmproj" in f.path.lower()),
                            key=lambda f: ("f16" not in f.path.lower(), f.path))
        if projectors:
            out.append(Wanted(projectors[0], "mmproj", PurePosixPath(projectors[0].path).name))
        return tuple(out)
    by_name = {PurePosixPath(f.path).name: f for f in files if "/" not in f.path}
    by_name.update({PurePosixPath(f.path).name: f for f in same_dir})  # next to the model wins over the root
    out += [Wanted(by_name[n], "tokenizer", f"tokenizer/{n}") for n in TOKENIZER_FILES if n in by_name]
    return tuple(out)
