"""`rk import` registers a .rkllm model through the daemon, into the store that daemon serves, and it runs
there (over the 1.3 double)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from daemon_proc import DaemonProc
from native_build import rkllm_libs  # noqa: F401  (fixture)


def rk(d: DaemonProc, *args: str, host: bool = False) -> subprocess.CompletedProcess[str]:
    """The real CLI, pointed at the daemon by --host (TCP) or --socket, with no RK_MODELS of its own."""
    where = ["--host", f"127.0.0.1:{d.tcp_port}"] if host else ["--socket", str(d.socket)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    return subprocess.run([sys.executable, "-m", "rk", *where, "import", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_import_over_tcp_registers_in_the_daemons_store_and_chats(
        tmp_path: Path, daemon_factory: Callable[..., DaemonProc], rkllm_libs: dict[str, Path]) -> None:
    d = daemon_factory(tcp=True, env={"RK_RKLLM_LIB": str(rkllm_libs["1.3"])})
    src = tmp_path / "qwen.rkllm"
    src.write_bytes(b"RKLLM fake weights")
    res = rk(d, str(src), "--name", "Qwen3:0.6B", "--context", "1024", "--runtime", "1.3", "--capabilities", "tools",
             host=True)
    assert res.returncode == 0, res.stderr
    assert "imported Qwen3:0.6B (completion, tools, embedding" in res.stdout  # the name as typed
    with d.client() as c:
        shown = c.call("show", model="qwen3:0.6b")
        events = list(c.events(c.send("chat", model="qwen3:0.6b", messages=[{"role": "user", "content": "hi there"}])))
    assert shown["capabilities"] == ["completion", "tools", "embedding"]
    assert shown["manifest"]["params"] == {"runtime": "1.3"} and shown["context_length"] == 1024
    assert "".join(e["text"] for e in events if e["ev"] == "token") == "hi there "
    stored = [p for p in d.models_dir.rglob("qwen.rkllm")]
    assert len(stored) == 1 and stored[0].read_bytes() == src.read_bytes()  # in the daemon's own store
    again = rk(d, str(src), "--name", "qwen3:0.6b")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_import_embed_with_pooling_and_tokenizer(tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory()
    src = tmp_path / "emb.rkllm"
    src.write_bytes(b"x")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    res = rk(d, str(src), "--name", "emb:1", "--embed", "--pooling", "mean", "--tokenizer", str(tok))
    assert res.returncode == 0, res.stderr
    with d.client() as c:
        shown = c.call("show", model="emb:1")
    assert shown["capabilities"] == ["embedding"] and shown["manifest"]["params"] == {"pooling": "mean"}
    assert shown["manifest"]["files"]["tokenizer"] == "tokenizer"


def test_import_refuses_bad_input(tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    d = daemon_factory()
    src = tmp_path / "x.rkllm"
    src.write_bytes(b"x")
    other = tmp_path / "x.bin"
    other.write_bytes(b"x")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    assert "neither a .gguf nor a .rkllm" in rk(d, str(other), "--name", "a:b").stderr
    assert "not a readable GGUF" in rk(d, str(fake), "--name", "a:b").stderr
    assert "1.2 or 1.3" in rk(d, str(src), "--name", "a:b", "--runtime", "1.1").stderr
    assert "unknown capabilities telepathy" in rk(d, str(src), "--name", "a:b", "--capabilities", "tools,telepathy").stderr
    assert "invalid model name" in rk(d, str(src), "--name", "../evil").stderr
    assert not any(d.models_dir.rglob("x.rkllm"))
