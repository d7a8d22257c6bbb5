"""`/api/create`, blobs and `rk create` against a real daemon: from a Modelfile, from `files`, legacy `modelfile`."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import ollama
import pytest

from daemon_proc import DaemonProc
from fake_hub import smollm2_path, token_ids, tokenizer_files
from native_build import rkllm_libs  # noqa: F401  (fixture)

SMOL = smollm2_path()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProc], rkllm_libs: dict[str, Path]) -> DaemonProc:
    return daemon_factory(tcp=True, env={"RK_RKLLM_LIB": str(rkllm_libs["1.3"])})


def show(d: DaemonProc, name: str) -> dict[str, Any]:
    with d.client() as c:
        return c.call("show", model=name)["manifest"]


def rk(d: DaemonProc, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RK_SOCKET=str(d.socket))
    env.pop("RK_HOST", None)
    return subprocess.run([sys.executable, "-m", "rk", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_rk_create_from_a_modelfile_with_a_local_gguf(daemon: DaemonProc, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text(f'FROM {SMOL}\nPARAMETER temperature 0.3\nPARAMETER stop "<|im_end|>"\n'
                                        'SYSTEM """Be terse."""\nTEMPLATE "{{ .Prompt }}"\n'
                                        "MESSAGE user hi\nMESSAGE assistant hello\nLICENSE Apache-2.0\n")
    out = rk(daemon, "create", "smol:mine", "-f", "Modelfile", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["writing manifest", "success"]
    m = show(daemon, "smol:mine")
    assert m["backend"] == "llamacpp" and m["files"] == {"gguf": SMOL.name} and m["family"] == "llama"
    assert m["defaults"] == {"temperature": 0.3, "stop": ["<|im_end|>"]} and m["system"] == "Be terse."
    assert m["template"] == "{{ .Prompt }}" and m["license"] == "Apache-2.0"
    assert m["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    sha = hashlib.sha256(SMOL.read_bytes()).hexdigest()
    assert httpx.head(f"{daemon.base_url}/api/blobs/sha256:{sha}").status_code == 200
    again = rk(daemon, "create", "smol:again", "-f", "Modelfile", cwd=tmp_path)  # the blob is there: no upload
    assert again.returncode == 0 and "using existing layer" in again.stdout
    (tmp_path / "Modelfile2").write_text("FROM smol:mine\nSYSTEM Be kind.\n")
    derived = rk(daemon, "create", "smol:kind", "-f", "Modelfile2", cwd=tmp_path)
    assert derived.returncode == 0, derived.stderr
    k = show(daemon, "smol:kind")
    assert (k["system"], k["defaults"]["temperature"], k["backend"]) == ("Be kind.", 0.3, "llamacpp")
    bad = rk(daemon, "create", "x", "-f", "Modelfile3", cwd=tmp_path)
    assert bad.returncode != 0
    (tmp_path / "Modelfile4").write_text("FROM ./missing.gguf\n")
    missing = rk(daemon, "create", "x", "-f", "Modelfile4", cwd=tmp_path)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_create_from_files_after_blob_upload_runs_on_the_npu_double(daemon: DaemonProc, tmp_path: Path) -> None:
    client = ollama.Client(host=daemon.base_url)
    files: dict[str, str] = {}
    for name, data in {"qwen.rkllm": b"RKLLM fake weights", **tokenizer_files()}.items():
        (tmp_path / name).write_bytes(data)
        files[name] = client.create_blob(tmp_path / name)
    statuses = [s.status for s in client.create(model="npu:up", files=files, system="be brief", stream=True)]
    assert statuses[-2:] == ["writing manifest", "success"] and statuses.count("using existing layer " + files["qwen.rkllm"]) == 1
    m = show(daemon, "npu:up")
    assert m["backend"] == "rkllm" and m["files"] == {"model": "qwen.rkllm", "tokenizer": "tokenizer"}
    assert m["capabilities"] == ["completion", "tools", "embedding"] and m["system"] == "be brief"
    reply = client.chat(model="npu:up", messages=[{"role": "user", "content": "hello world"}])
    ids = token_ids("<|system|> be brief <|user|> hello world <|assistant|>")
    assert reply.message.content == "".join(f"t{i} " for i in ids)  # rendered with the uploaded chat template


def test_legacy_modelfile_and_blob_checks(daemon: DaemonProc) -> None:
    base = daemon.base_url
    r = httpx.post(f"{base}/api/create", json={"model": "legacy:1", "modelfile": "FROM syn:chat\nSYSTEM old client\n",
                                               "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert show(daemon, "legacy:1")["system"] == "old client"
    data = b"GGUF" + os.urandom(4000)
    sha = hashlib.sha256(data).hexdigest()
    assert httpx.head(f"{base}/api/blobs/sha256:{sha}").status_code == 404
    wrong = httpx.post(f"{base}/api/blobs/sha256:{'0' * 64}", content=data)
    assert wrong.status_code == 400 and "hash to" in wrong.json()["error"]
    assert httpx.head(f"{base}/api/blobs/sha256:{'0' * 64}").status_code == 404
    assert httpx.post(f"{base}/api/blobs/sha256:{sha}", content=data).status_code == 201
    assert httpx.head(f"{base}/api/blobs/sha256:{sha}").status_code == 200
    missing = httpx.post(f"{base}/api/create", json={"model": "m", "files": {"m.gguf": f"sha256:{'1' * 64}"}})
    assert missing.status_code == 400 and "upload it" in missing.json()["error"]
    assert httpx.post(f"{base}/api/create", json={"model": "m"}).json()["error"] == "neither 'from' or 'files' was specified"
    assert httpx.head(f"{base}/api/blobs/md5:abc").status_code == 400


def test_delete_removes_blobs_no_other_model_uses(daemon: DaemonProc, tmp_path: Path) -> None:
    client = ollama.Client(host=daemon.base_url)
    (tmp_path / "a.rkllm").write_bytes(b"RKLLM weights shared by two models")
    digest = client.create_blob(tmp_path / "a.rkllm")
    url = f"{daemon.base_url}/api/blobs/{digest}"
    for name in ("one:x", "two:x"):
        client.create(model=name, files={"a.rkllm": digest})
    assert client.delete("one:x")["status"] == "success"
    assert httpx.head(url).status_code == 200  # still used by two:x
    assert show(daemon, "two:x")["files"] == {"model": "a.rkllm"}
    client.delete("two:x")
    assert httpx.head(url).status_code == 404
    assert [m.model for m in client.list().models if m.model in ("one:x", "two:x")] == []


def test_modelfile_messages_come_before_the_chat(daemon: DaemonProc) -> None:
    client = ollama.Client(host=daemon.base_url)
    modelfile = 'FROM syn:chat\nMESSAGE user alpha\nMESSAGE assistant """beta"""\n'  # the legacy field
    r = httpx.post(f"{daemon.base_url}/api/create", json={"model": "hist:1", "modelfile": modelfile, "stream": False})
    assert r.json() == {"status": "success"}
    reply = client.chat(model="hist:1", messages=[{"role": "user", "content": "gamma"}]).message.content
    assert reply == "alpha beta gamma "  # the synthetic model echoes the turns it was given, history first
    own = client.chat(model="hist:1", messages=[{"role": "system", "content": "mine"}, {"role": "user", "content": "delta"}])
    assert own.message.content == "mine alpha beta delta "
