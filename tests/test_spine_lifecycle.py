"""The daemon's life: private socket, refusing a second daemon, replacing a stale socket, clean SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from daemon_proc import start_daemon, synthetic_models


def test_socket_is_private(syn_daemon) -> None:
    assert stat.S_IMODE(os.stat(syn_daemon.socket).st_mode) == 0o600


def test_default_socket_dir_is_0700(tmp_path: Path, monkeypatch) -> None:
    from rk.daemon.settings import Settings

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    s = Settings.from_env({})
    assert s.socket == tmp_path / "rk" / "rk.sock"
    models = tmp_path / "m"
    synthetic_models(models)
    d = start_daemon(tmp_path / "d", models_dir=models, bundled=False, socket_path=s.socket)
    try:
        assert stat.S_IMODE(os.stat(s.socket.parent).st_mode) == 0o700
    finally:
        d.stop()


def test_second_daemon_on_live_socket_exits_with_message(syn_daemon) -> None:
    env = dict(os.environ, RK_SOCKET=str(syn_daemon.socket), RK_MODELS=str(syn_daemon.models_dir), RK_BUNDLED="0")
    p = subprocess.run([sys.executable, "-m", "rk", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "already serving" in p.stderr
    with syn_daemon.client() as c:  # the first one is unharmed
        assert c.call("version")["ev"] == "version"


def test_stale_socket_is_replaced_and_sigterm_removes_it(tmp_path: Path) -> None:
    sock_path = tmp_path / "s" / "rk.sock"
    sock_path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))  # bound but never listening, like a daemon that died
    stale.close()
    assert sock_path.exists()
    models = tmp_path / "m"
    synthetic_models(models)
    d = start_daemon(tmp_path / "d", models_dir=models, bundled=False, socket_path=sock_path)
    with d.client() as c:
        assert c.call("version")["ev"] == "version"
    assert d.stop(signal.SIGTERM) == 0
    assert not sock_path.exists()


def test_sigterm_gives_every_job_a_final_event(tmp_path: Path) -> None:
    models = tmp_path / "m"
    synthetic_models(models)
    d = start_daemon(tmp_path / "d", models_dir=models, bundled=False, env={"RK_SHUTDOWN_GRACE": "0.5"})
    with d.client() as c:
        for i in range(6):
            c.send("chat", rid=f"j{i}", model="syn:slow", messages=[{"role": "user", "content": "a b c"}],
                    options={"max_tokens": 400})
        time.sleep(0.5)
        d.proc.send_signal(signal.SIGTERM)
        finals = {}
        while len(finals) < 6:
            ev = c.read()
            if ev["ev"] in ("done", "error"):
                finals[ev["id"]] = ev.get("code", "done")
    assert d.proc.wait(30) == 0
    assert set(finals) == {f"j{i}" for i in range(6)}
    assert list(finals.values()) == ["shutting_down"] * 6  # waiting ones refused, the running one stopped: retry later
    assert not d.socket.exists()
