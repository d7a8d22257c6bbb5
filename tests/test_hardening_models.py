"""Issue 15, items 6 and 13: every model name gets its own flat directory, old stores are migrated,
and names are checked in ASCII before they are lowered."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rk.daemon.errors import RkError
from rk.daemon.store.models import MANIFEST, Manifest, ModelStore, dir_name, normalize_name

from daemon_proc import DaemonProc

PART = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda p: ".." not in p)
NAMES = st.builds(lambda parts, tag: "/".join(parts) + ":" + tag, st.lists(PART, min_size=1, max_size=3), PART)


# ---- in-process: the layout ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(NAMES, min_size=2, max_size=6, unique=True))
def test_every_name_has_its_own_flat_directory(tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> None:
    store = ModelStore(tmp_path_factory.mktemp("flat"), bundled=False)
    dirs = [store.model_dir(n) for n in names]
    assert all(d.parent == store.root.resolve() for d in dirs)
    assert len(set(dirs)) == len(names)


@pytest.mark.parametrize("name", ["\u212a", "\u212ael:latest", "caf\u00e9", "\u017fyn:chat", "a/b/c/d:e", "a:b:c",
                                  "../x", "a/../b", "a..b", "-x", "x" * 201])
def test_names_outside_the_ascii_grammar_are_refused(name: str) -> None:
    """The Kelvin sign lowers to `k` and the long s upper-cases to `S`: checked first, they never get there."""
    with pytest.raises(RkError) as e:
        normalize_name(name)
    assert e.value.code == "bad_request"


def test_accepted_names() -> None:
    assert normalize_name("hf.co/Owner/Repo:Q4_K_M") == "hf.co/owner/repo:q4_k_m"
    assert normalize_name("Library/Llama3") == "library/llama3:latest"
    assert normalize_name(" smollm2:135m ") == "smollm2:135m"
    assert dir_name("hf.co/owner/repo:q4_k_m") == "hf.co%2Fowner%2Frepo%3Aq4_k_m"


def test_a_name_is_listed_as_typed_and_matched_in_any_case(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, bundled=False)
    store.save(Manifest(name="hf.co/Org/Repo-GGUF:Q4_K_M", backend="synthetic"))
    (tmp_path / dir_name("old:latest")).mkdir()  # a store written when names were lowered still loads
    (tmp_path / dir_name("old:latest") / MANIFEST).write_bytes(orjson.dumps({"name": "old:latest", "backend": "synthetic"}))
    assert [m.name for m in ModelStore(tmp_path, bundled=False).list()] == ["hf.co/Org/Repo-GGUF:Q4_K_M", "old:latest"]
    assert store.get("HF.CO/org/repo-gguf:q4_k_m").name == "hf.co/Org/Repo-GGUF:Q4_K_M"
    assert store.model_dir("hf.co/Org/Repo-GGUF:Q4_K_M").name == "hf.co%2Forg%2Frepo-gguf%3Aq4_k_m"
    assert store.copy("old", "Old:Copy").name == "Old:Copy" and store.get("old:copy").name == "Old:Copy"


def old_layout(root: Path, name: str, **extra: object) -> Path:
    """Where the nested layout kept a model: `root/[ns/]name/tag`."""
    base, tag = normalize_name(name).rsplit(":", 1)
    d = root / base / tag
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST).write_bytes(orjson.dumps({"name": name, "backend": "synthetic", "kind": "chat", **extra}))
    (d / "weights.bin").write_bytes(name.encode())
    return d


def test_migration_untangles_nested_models(tmp_path: Path) -> None:
    root = tmp_path / "models"
    for name in ("a:b", "a/b:c", "ns/x:y", "plain:latest"):
        old_layout(root, name)
    (root / "smollm2" / "135m" / "weights").mkdir(parents=True)  # a bundled model's converted weights
    store = ModelStore(root, bundled=False)
    assert [m.name for m in store.list()] == ["a/b:c", "a:b", "ns/x:y", "plain:latest"]
    for m in store.list():
        assert m.dir.parent == root and (m.dir / "weights.bin").read_text() == m.name
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [dir_name(n) for n in ("a:b", "a/b:c", "ns/x:y", "plain:latest")] + ["smollm2"])
    store.delete("a:b")
    assert [m.name for m in ModelStore(root, bundled=False).list()] == ["a/b:c", "ns/x:y", "plain:latest"]


# ---- through the daemon --------------------------------------------------------------------------


def create(h: httpx.Client, model: str, system: str) -> None:
    r = h.post("/api/create", json={"model": model, "from": "syn:chat", "system": system, "stream": False})
    assert r.status_code == 200, r.text


def names(h: httpx.Client) -> set[str]:
    return {m["name"] for m in h.get("/api/tags").json()["models"]}


def test_deleting_a_name_leaves_the_name_nested_under_it(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True)
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        create(h, "victim:model", "outer")
        create(h, "victim/model:v1", "inner")
        create(h, "hf.co/owner/repo:q4_k_m", "deep")
        assert h.request("DELETE", "/api/delete", json={"model": "victim:model"}).status_code == 200
        assert {"victim/model:v1", "hf.co/owner/repo:q4_k_m"} <= names(h) and "victim:model" not in names(h)
        assert h.post("/api/show", json={"model": "victim/model:v1"}).json()["system"] == "inner"
        r = h.post("/api/chat", json={"model": "hf.co/owner/repo:q4_k_m", "stream": False,
                                      "messages": [{"role": "user", "content": "a b"}]})
        assert r.status_code == 200, r.text
        create(h, "base/tag:weights", "w")  # creating then deleting this wiped `base:tag` before
        create(h, "base:tag", "keep")
        assert h.request("DELETE", "/api/delete", json={"model": "base/tag:weights"}).status_code == 200
        assert h.post("/api/show", json={"model": "base:tag"}).json()["system"] == "keep"


def test_daemon_migrates_an_old_store_on_start(tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    models = tmp_path / "models"
    old_layout(models, "victim:model", system="outer")
    old_layout(models, "victim/model:v1", system="inner")
    d = daemon_factory(tcp=True, models_dir=models)
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert {"victim:model", "victim/model:v1", "syn:chat"} <= names(h)
        assert h.request("DELETE", "/api/delete", json={"model": "victim:model"}).status_code == 200
        assert h.post("/api/show", json={"model": "victim/model:v1"}).json()["system"] == "inner"
    assert not (models / "victim").exists()


def test_kelvin_sign_is_not_k(daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory(tcp=True)
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        create(h, "k", "plain k")
        for path, body in (("/api/show", {"model": "\u212a"}), ("/api/chat", {"model": "\u212a", "messages": []}),
                           ("/api/copy", {"source": "k", "destination": "\u212a2"})):
            r = h.post(path, json=body)
            assert r.status_code == 400 and "invalid model name" in r.json()["error"], (path, r.text)
    with d.client() as c:
        c.send("chat", model="\u212a", messages=[{"role": "user", "content": "hi"}])
        ev = c.read()
        assert ev["ev"] == "error" and ev["code"] == "bad_request", ev


def test_copies_left_unfinished_by_a_crash_are_removed_at_start(
        tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    """A daemon killed mid-create leaves a `.staging-*` copy (weights and all); the next start removes it."""
    models = tmp_path / "models"
    left = models / ".staging-0123abcd"
    (left / "weights").mkdir(parents=True)
    (left / "weights" / "model.bin").write_bytes(b"x" * 4096)
    (left / MANIFEST).write_bytes(orjson.dumps({"name": "half:done", "backend": "synthetic", "kind": "chat"}))
    (models / ".staging-stray").write_bytes(b"")
    d = daemon_factory(tcp=True, models_dir=models)
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(".staging-")) == []
    assert "removing" in d.log() and ".staging-0123abcd" in d.log()
    with httpx.Client(base_url=d.base_url, timeout=10) as h:
        assert "half:done" not in names(h) and "syn:chat" in names(h)
