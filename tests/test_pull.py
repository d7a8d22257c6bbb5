"""`/api/pull`, the `pull` op and `rk pull` against a fake hub (HF_ENDPOINT): statuses, resume, verification."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import ollama
import openai
import pexpect
import pytest

from rk.client import DaemonError

from daemon_proc import DaemonProc
from fake_hub import FakeHub, smollm2_gguf, token_ids, tokenizer_files
from native_build import rkllm_libs  # noqa: F401  (fixture)

GGUF_REPO, NPU_REPO = "rk-test/SmolLM2-135M-Instruct-GGUF", "rk-test/Qwen3-0.6B-RKLLM"
BAD_REPO, BIG_REPO = "rk-test/Broken-GGUF", "rk-test/Oversized-GGUF"
GGUF_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
RKLLM_3588 = b"RKLLM fake weights for rk3588 " * 40_000  # ~1.2 MB, like a (tiny) converted model
RKLLM_3576 = b"RKLLM fake weights for rk3576 " * 10


@pytest.fixture(scope="module")
def gguf_bytes() -> bytes:
    return smollm2_gguf()


@pytest.fixture
def hub(gguf_bytes: bytes) -> Iterator[FakeHub]:
    h = FakeHub().start()
    h.add(GGUF_REPO, {GGUF_FILE: gguf_bytes, "SmolLM2-135M-Instruct-Q8_0.gguf": b"GGUF other quant", "README.md": b"# x"})
    h.add(NPU_REPO, {"Qwen3-0.6B-rk3588-w8a8.rkllm": RKLLM_3588, "Qwen3-0.6B-rk3576-w8a8.rkllm": RKLLM_3576,
                     **tokenizer_files(), "README.md": b"# npu"})
    h.add(BAD_REPO, {"bad-Q4_0.gguf": b"GGUF" + b"\0" * 5000}, corrupt={"bad-Q4_0.gguf": b"GGUF" + b"\1" * 5000})
    h.add(BIG_REPO, {"big-Q4_0.gguf": b"GGUF" + b"\0" * 5000}, corrupt={"big-Q4_0.gguf": b"GGUF" + b"\0" * 900_000})
    yield h
    h.stop()


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A fake /proc and /sys of an RK3588 board: the SoC picks the .rkllm file when no tag is given."""
    root = tmp_path / "board"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    return root


@pytest.fixture
def start(daemon_factory: Callable[..., DaemonProc], hub: FakeHub, board: Path,
          rkllm_libs: dict[str, Path]) -> Callable[..., DaemonProc]:
    def make(**kw: Any) -> DaemonProc:
        env = {"HF_ENDPOINT": hub.url, "RK_SYSFS_ROOT": str(board), "RK_RKLLM_LIB": str(rkllm_libs["1.3"])}
        return daemon_factory(tcp=True, env=env | kw.pop("env", {}), **kw)
    return make


def api_pull(d: DaemonProc, model: str, **body: Any) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{d.base_url}/api/pull", json={"model": model, **body}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line) for line in r.iter_lines() if line]


def progress_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_ollama_order(lines: list[dict[str, Any]]) -> None:
    statuses = [x["status"] for x in lines]
    pulling = [s for s in statuses if s.startswith("pulling ") and s != "pulling manifest"]
    assert statuses[0] == "pulling manifest" and pulling
    assert statuses[-4:] == ["verifying sha256 digest", "writing manifest", "removing any unused layers", "success"]
    assert statuses[1:-4] == pulling
    for digest in {x["digest"] for x in lines if "digest" in x}:
        done = [x["completed"] for x in lines if x.get("digest") == digest]
        assert done == sorted(done) and done[-1] == next(x["total"] for x in lines if x.get("digest") == digest)


def test_gguf_pull_streams_ollama_statuses_and_registers_the_model(start: Callable[..., DaemonProc], hub: FakeHub,
                                                                     gguf_bytes: bytes) -> None:
    d = start()
    lines = api_pull(d, f"hf.co/{GGUF_REPO}:Q4_1")
    assert_ollama_order(lines)
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    assert {x["digest"] for x in lines if "digest" in x} == {f"sha256:{sha}"}
    assert any(x["status"] == f"pulling {sha[:12]}" for x in lines)
    name = f"hf.co/{GGUF_REPO}:Q4_1"  # listed as typed, everywhere a client looks for it
    tags = httpx.get(f"{d.base_url}/api/tags").json()["models"]
    assert name in [m["name"] for m in tags]
    assert name in [m.model for m in ollama.Client(host=d.base_url).list().models]
    oa = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0)
    assert name in [m.id for m in oa.models.list()]
    env = dict(os.environ, RK_SOCKET=str(d.socket), COLUMNS="200")
    listed = subprocess.run([sys.executable, "-m", "rk", "models"], env=env, capture_output=True, text=True, timeout=60)
    assert name in listed.stdout, listed.stdout
    assert ollama.Client(host=d.base_url).show(name.lower()).details.quantization_level == "Q4_1"  # matched in any case
    with d.client() as c:
        m = c.call("show", model=name)["manifest"]
    assert (m["backend"], m["files"], m["family"], m["quantization"], m["context_length"]) == (
        "llamacpp", {"gguf": GGUF_FILE}, "llama", "Q4_1", 8192)
    assert m["capabilities"] == ["completion", "embedding"]
    assert hub.served[f"{GGUF_REPO}/{GGUF_FILE}"] == len(gguf_bytes)
    again = api_pull(d, name)  # already here: the manifest is checked, nothing downloaded
    assert again[-1] == {"status": "success"} and hub.served[f"{GGUF_REPO}/{GGUF_FILE}"] == len(gguf_bytes)
    assert [x.get("completed") for x in again if "digest" in x] == [len(gguf_bytes)]
    hub.stop()  # offline from here: the pulled GGUF answers on llama.cpp straight from the store
    with d.client(timeout=120) as c:
        done = c.call("chat", model=name, messages=[{"role": "user", "content": "Hi"}],
                      options={"max_tokens": 3, "temperature": 0})
    assert done["ev"] == "done" and done["stats"]["generate_tokens"] >= 1


def test_npu_pull_by_soc_with_tokenizer_answers_offline(start: Callable[..., DaemonProc], hub: FakeHub) -> None:
    d = start()
    with d.client() as c:
        events = list(c.events(c.send("pull", model=f"hf.co/{NPU_REPO}")))
    assert [e["ev"] for e in events][-1] == "done" and all(e["ev"] == "progress" for e in events[:-1])
    assert events[0]["status"] == "pulling manifest" and events[-2]["status"] == "success"
    assert hub.served[f"{NPU_REPO}/Qwen3-0.6B-rk3588-w8a8.rkllm"] == len(RKLLM_3588)
    assert hub.served[f"{NPU_REPO}/Qwen3-0.6B-rk3576-w8a8.rkllm"] == 0  # the board is an RK3588
    name = f"hf.co/{NPU_REPO}:latest"
    with d.client() as c:
        m = c.call("show", model=name)["manifest"]
    assert m["backend"] == "rkllm" and m["files"] == {"model": "Qwen3-0.6B-rk3588-w8a8.rkllm", "tokenizer": "tokenizer"}
    assert m["capabilities"] == ["completion", "tools", "embedding"] and m["family"] == "qwen3"
    hub.stop()  # the network is gone: the model and its tokenizer are on the board
    with d.client() as c:
        reply = "".join(e["text"] for e in c.events(c.send("chat", model=name, messages=[
            {"role": "user", "content": "hello offline world"}])) if e["ev"] == "token")
    ids = token_ids("<|user|> hello offline world <|assistant|>")
    assert reply == "".join(f"t{i} " for i in ids)  # the C double echoes the token ids it was given


def test_killed_daemon_resumes_the_download(start: Callable[..., DaemonProc], hub: FakeHub, tmp_path: Path,
                                            gguf_bytes: bytes) -> None:
    key, half = f"{GGUF_REPO}/{GGUF_FILE}", len(gguf_bytes) // 2
    hub.stall_at[key] = half
    models = tmp_path / "models"
    d = start(models_dir=models)
    c = d.client(timeout=60)
    c.send("pull", model=f"hf.co/{GGUF_REPO}:q4_1")
    with d.client() as s:
        while not [p for p in s.call("status")["pulls"] if p["completed"] >= half]:
            time.sleep(0.05)
        (view,) = s.call("status")["pulls"]
    assert view["model"] == f"hf.co/{GGUF_REPO}:q4_1" and view["total"] == len(gguf_bytes)
    assert view["status"].startswith("pulling ") and view["clients"] == 1
    d.stop(signal.SIGKILL)
    c.close()
    partials = list((models / ".partial").iterdir())
    assert [p.stat().st_size for p in partials] == [half]
    hub.release()
    d2 = start(models_dir=models)
    lines = api_pull(d2, f"hf.co/{GGUF_REPO}:q4_1")
    assert_ollama_order(lines)
    first = next(x for x in lines if "digest" in x)
    assert first["completed"] == half  # picked up where the partial ended
    assert hub.served[key] < 1.2 * len(gguf_bytes)  # well under twice the file
    assert not list((models / ".partial").iterdir())
    with d2.client() as c2:
        assert c2.call("show", model=f"hf.co/{GGUF_REPO}:q4_1")["size"] == len(gguf_bytes)


def test_bytes_that_do_not_match_the_hub_digest_are_refused(start: Callable[..., DaemonProc], tmp_path: Path) -> None:
    d = start(models_dir=tmp_path / "models")
    lines = api_pull(d, f"hf.co/{BAD_REPO}")
    assert "error" in lines[-1] and "does not match the hub's sha256" in lines[-1]["error"]
    assert lines[0] == {"status": "pulling manifest"} and not any(x.get("status") == "success" for x in lines)
    assert f"hf.co/{BAD_REPO}:latest" not in [m["name"] for m in httpx.get(f"{d.base_url}/api/tags").json()["models"]]
    assert not list((tmp_path / "models" / ".partial").iterdir()) and not (tmp_path / "models" / ".blobs").exists()
    r = httpx.post(f"{d.base_url}/api/pull", json={"model": f"hf.co/{BAD_REPO}", "stream": False}, timeout=60)
    assert r.status_code == 502 and "does not match" in r.json()["error"]
    big = api_pull(d, f"hf.co/{BIG_REPO}")  # more bytes than the hub's own figure: cut off, not stored
    assert "larger than the 5004 bytes the hub announced" in big[-1]["error"]
    assert max(x.get("completed", 0) for x in big) <= 5004 and not list((tmp_path / "models" / ".partial").iterdir())


def test_unknown_repo_and_bad_choices_are_clear_errors(start: Callable[..., DaemonProc]) -> None:
    d = start()
    r = httpx.post(f"{d.base_url}/api/pull", json={"model": "hf.co/rk-test/nope"}, timeout=60)
    assert r.status_code == 404 and "no repo hf.co/rk-test/nope" in r.json()["error"]
    r = httpx.post(f"{d.base_url}/api/pull", json={"model": f"hf.co/{GGUF_REPO}"}, timeout=60)
    assert r.status_code == 400 and "several model files" in r.json()["error"] and "Q8_0.gguf" in r.json()["error"]
    r = httpx.post(f"{d.base_url}/api/pull", json={"model": "llama3"}, timeout=60)
    assert r.status_code == 404 and "hf.co/OWNER/REPO" in r.json()["error"]
    assert api_pull(d, "syn:chat") == [{"status": "pulling manifest"}, {"status": "success"}]  # a local model
    with d.client() as c, pytest.raises(DaemonError, match="no repo"):
        c.call("pull", model="hf.co/rk-test/nope")


def test_two_clients_share_one_download(start: Callable[..., DaemonProc], hub: FakeHub, gguf_bytes: bytes) -> None:
    key = f"{GGUF_REPO}/{GGUF_FILE}"
    hub.stall_at[key] = 1 << 20
    d = start()
    results: list[list[dict[str, Any]]] = []
    threads = [threading.Thread(target=lambda: results.append(api_pull(d, f"hf.co/{GGUF_REPO}:Q4_1"))) for _ in range(2)]
    for t in threads:
        t.start()
    with d.client() as s:
        while not [p for p in s.call("status")["pulls"] if p["clients"] == 2 and p["completed"] == 1 << 20]:
            time.sleep(0.05)
    name = f"hf.co/{GGUF_REPO}:Q4_1"
    env = dict(os.environ, RK_SOCKET=str(d.socket), COLUMNS="200")
    ps = subprocess.run([sys.executable, "-m", "rk", "ps"], env=env, capture_output=True, text=True, timeout=60)
    assert "PULLING" in ps.stdout and name in ps.stdout and f"1/{len(gguf_bytes) / 2**20:.0f} MB" in ps.stdout
    top = subprocess.run([sys.executable, "-m", "rk", "top", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert f"⇣ {name}" in top.stdout, top.stdout
    hub.release()
    for t in threads:
        t.join(120)
    assert len(results) == 2 and all(r[-1] == {"status": "success"} for r in results)
    assert hub.served[key] == len(gguf_bytes)


def test_ollama_python_client_shows_progress(start: Callable[..., DaemonProc], hub: FakeHub) -> None:
    d = start(env={"HF_TOKEN": "hf_secret"})
    parts = list(ollama.Client(host=d.base_url).pull(f"hf.co/{NPU_REPO}:rk3576", stream=True))
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    model = [p for p in parts if p.digest == progress_digest(RKLLM_3576)]
    assert model[0].completed == 0 and model[-1].completed == model[-1].total == len(RKLLM_3576)
    assert len({p.digest for p in parts if p.digest}) == 5  # the .rkllm and four tokenizer files
    assert ollama.Client(host=d.base_url).pull(f"hf.co/{NPU_REPO}:rk3576").status == "success"  # stream=False
    assert hub.auth and set(hub.auth) == {"Bearer hf_secret"}  # HF_TOKEN went with every hub request


NODE_PULL = """
const { Ollama } = require('ollama');
(async () => {
  const client = new Ollama({ host: process.argv[2] });
  for await (const part of await client.pull({ model: process.argv[3], stream: true })) {
    console.log(JSON.stringify(part));
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
"""


def test_npm_ollama_client_shows_progress(start: Callable[..., DaemonProc], tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm and node are not installed: the npm `ollama` client cannot be tried")
    js = tmp_path / "js"
    js.mkdir()
    subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "ollama@0.6"], cwd=js, check=True,
                   capture_output=True, timeout=300)
    (js / "pull.cjs").write_text(NODE_PULL)
    d = start()
    out = subprocess.run(["node", "pull.cjs", d.base_url, f"hf.co/{NPU_REPO}:rk3576"], cwd=js, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    parts = [json.loads(line) for line in out.stdout.splitlines()]
    assert parts[0]["status"] == "pulling manifest" and parts[-1]["status"] == "success"
    model = [p for p in parts if p.get("digest") == progress_digest(RKLLM_3576)]
    assert model[-1]["completed"] == model[-1]["total"] == len(RKLLM_3576)


def test_rk_pull_shows_a_bar_and_ctrl_c_keeps_a_resumable_partial(start: Callable[..., DaemonProc], hub: FakeHub,
                                                                  tmp_path: Path) -> None:
    key, stall = f"{NPU_REPO}/Qwen3-0.6B-rk3588-w8a8.rkllm", len(RKLLM_3588) // 2
    hub.stall_at[key] = stall
    models = tmp_path / "models"
    d = start(models_dir=models)
    env = dict(os.environ, RK_SOCKET=str(d.socket), COLUMNS="120")
    cmd = [sys.executable, "-m", "rk", "pull", f"hf.co/{NPU_REPO}:rk3588"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with d.client() as s:
        while not [p for p in s.call("status")["pulls"] if p["completed"] == stall]:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "pull` to resume" in err
        while s.call("status")["pulls"]:  # its only client left: the download stopped
            time.sleep(0.05)
    assert [p.stat().st_size for p in (models / ".partial").iterdir()] == [stall]
    hub.release()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # not a terminal: plain lines instead of bars
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert f"pulling {hashlib.sha256(RKLLM_3588).hexdigest()[:12]}: {len(RKLLM_3588)} bytes" in lines
    assert hub.served[key] == len(RKLLM_3588)  # the second run fetched only the missing half


def test_rk_pull_on_a_terminal_draws_rich_bars(start: Callable[..., DaemonProc]) -> None:
    d = start()
    env = dict(os.environ, RK_SOCKET=str(d.socket), COLUMNS="120", TERM="xterm")
    child = pexpect.spawn(sys.executable, ["-m", "rk", "pull", f"hf.co/{NPU_REPO}:rk3576"], env=env,
                          encoding="utf-8", timeout=120, dimensions=(40, 120))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    screen = child.before
    assert "━" in screen and f"{len(RKLLM_3576)}/{len(RKLLM_3576)} bytes" in screen  # bar and byte counts
    assert "pulling manifest" in screen and "success" in screen


def test_a_pull_does_not_wait_behind_the_running_job(start: Callable[..., DaemonProc]) -> None:
    d = start()
    with d.client() as c:
        rid = c.send("chat", model="syn:slow", messages=[{"role": "user", "content": "go"}], options={"max_tokens": 100_000})
        while next(c.events(rid))["ev"] != "token":
            pass  # the accelerator is busy now
        assert api_pull(d, f"hf.co/{NPU_REPO}:rk3576")[-1] == {"status": "success"}
        assert [j["state"] for j in c.call("status")["queue"]] in (["generating"], ["answering"])  # still running
        c.send("cancel", target=rid)
