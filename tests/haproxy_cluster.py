"""Three real rk daemons on loopback behind a real HAProxy running the shipped deploy/haproxy/haproxy.cfg,
rewritten only where a test machine differs (addresses, ports, paths, model names). Shared by
tests/test_haproxy.py (properties) and bench/b_multiboard.py (the figures).

`policy="central"` is the shipped config (leastconn, maxconn 1, agent-check); `"roundrobin"` is the
naive one for comparison (roundrobin, no per-board limit, no agent).
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from daemon_proc import DaemonProc, end_process, free_port, start_daemon, synthetic_models

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "haproxy" / "haproxy.cfg"
BOARDS = ("opi5-a", "opi5-b", "rock5b")
# The shipped map's models, played by synthetic ones: every board holds "syn:slow" (20 tokens/s),
# only rock5b the "big" model.
MODELS = {"qwen3:0.6b": "syn:slow", "qwen3:8b": "syn:chat"}
ADDRESSES = {"192.168.1.11": 0, "192.168.1.12": 1, "192.168.1.13": 2}


def haproxy_missing() -> str | None:
    """Why the HAProxy tests cannot run here, or None."""
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (apt-get install haproxy; .ci/run installs it)"
    return None


def config(boards: list[DaemonProc], agents: list[int], port: int, stats_port: int, map_path: Path,
           policy: str) -> str:
    """The shipped config with this machine's addresses, ports and paths."""
    text = SHIPPED.read_text()
    text = re.sub(r"^\s*stats socket .*\n", "", text, flags=re.M)
    text = text.replace("bind :11434", f"bind 127.0.0.1:{port}").replace("bind 127.0.0.1:8404", f"bind 127.0.0.1:{stats_port}")
    text = text.replace("/etc/haproxy/models.map", str(map_path))
    for real, syn in MODELS.items():
        text = text.replace(f'agent-send "{real}\\n"', f'agent-send "{syn}\\n"')

    def server(m: re.Match[str]) -> str:
        i = ADDRESSES[m.group(2)]
        line = f"{m.group(1)}127.0.0.1:{boards[i].tcp_port}{m.group(3)}"
        return line.replace("agent-port 11435", f"agent-port {agents[i]}")

    text = re.sub(r"^(\s*server \S+ )(\S+):11434(.*)$", server, text, flags=re.M)
    if policy == "roundrobin":
        text = text.replace("balance leastconn", "balance roundrobin").replace(" maxconn 1 ", " maxconn 0 ")
        text = re.sub(r" agent-check agent-port \d+ agent-inter \S+ agent-send \"[^\"]*\"", "", text)
    return text



@dataclass
class Cluster:
    tmp: Path
    policy: str = "central"
    boards: list[DaemonProc] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    stats_port: int = 0

    def __enter__(self) -> Cluster:
        models = self.tmp / "models"
        synthetic_models(models)
        agents = []
        for i in range(len(BOARDS)):
            d = start_daemon(self.tmp / f"b{i}", models_dir=models, tcp=True, bundled=False,
                             extra_args=["--agent-port", "0"], env={"RK_KEEP_ALIVE": "-1"})
            self.boards.append(d)
            with d.client() as c:
                agents.append(int(c.call("status")["agent"].rpartition(":")[2]))
        map_path = self.tmp / "models.map"
        map_path.write_text("".join(f"{syn} {be}\n" for syn, be in
                                    (("syn:slow", "be_qwen3_0_6b"), ("syn:chat", "be_qwen3_8b"))))
        self.port, self.stats_port = free_port(), free_port()
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(config(self.boards, agents, self.port, self.stats_port, map_path, self.policy))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(self.tmp / "haproxy.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_servers(lambda s: s == "UP" or (self.policy == "central" and s.startswith("UP")), "every board UP")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            end_process(self.proc, timeout=10)
        for d in self.boards:
            d.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def servers(self, backend: str = "be_qwen3_0_6b") -> dict[str, dict[str, str]]:
        """HAProxy's own view of each board in a backend (its stats CSV): status, weight, sessions."""
        r = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=10)
        rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == backend and row["svname"] in BOARDS}

    def wait_servers(self, ok: Any, what: str, timeout: float = 60.0, backend: str = "be_qwen3_0_6b") -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = {k: v["status"] for k, v in self.servers(backend).items()}
                if len(states) == len(BOARDS) and all(ok(s) for s in states.values()):
                    return
            except httpx.HTTPError:
                states = {}
            assert time.monotonic() < deadline, f"HAProxy never saw {what}: {states}"
            time.sleep(0.05)

    def wait_servers_of(self, board: str, status: str, timeout: float = 60.0) -> None:
        """Until HAProxy shows `board` in `status` (UP, DRAIN, DOWN…) in the shared backend."""
        deadline = time.monotonic() + timeout
        while not (now := self.servers()[board]["status"]).startswith(status):
            assert time.monotonic() < deadline, f"HAProxy never showed {board} {status} (it shows {now})"
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        """SIGKILL a board's daemon and its runner (one process group), as a power cut would."""
        os.killpg(self.boards[i].proc.pid, signal.SIGKILL)
        self.boards[i].proc.wait()


def chat(tokens: int, stream: bool = False, model: str = "syn:slow") -> dict[str, Any]:
    """An Ollama chat of `tokens` tokens: at 20 tokens/s, tokens / 20 seconds of board time."""
    return {"model": model, "messages": [{"role": "user", "content": "go"}], "stream": stream,
            "options": {"num_predict": tokens}}
