"""The rest of the `rk` CLI: completions are current, start-up stays light, no daemon is one line, --json shapes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent
RK = str(Path(sys.executable).parent / "rk")
HEAVY = {"torch", "transformers", "textual", "aiohttp"}


def rk(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RK, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=60, **kw)


def rk_json(d: Any, *args: str, tcp: bool = False) -> Any:
    where = ["--host", f"127.0.0.1:{d.tcp_port}"] if tcp else ["--socket", str(d.socket)]
    r = rk(*where, *args, "--json")
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)


def test_completion_scripts_are_current():
    r = subprocess.run([sys.executable, "-m", "rk.completions", "--check", str(REPO / "completions")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{r.stderr}: run `python -m rk.completions` and commit completions/"


def test_completion_callback_lists_commands():
    env = dict(os.environ, _RK_COMPLETE="complete_bash", COMP_WORDS="rk mo", COMP_CWORD="1")
    assert rk(env=env).stdout.split() == ["models"]


def test_model_names_complete_from_the_daemon(syn_daemon):
    env = dict(os.environ, _RK_COMPLETE="complete_bash", RK_SOCKET=str(syn_daemon.socket))
    assert rk(env=env | {"COMP_WORDS": "rk show syn:", "COMP_CWORD": "2"}).stdout.split() == ["syn:chat", "syn:embed", "syn:slow"]
    assert rk(env=env | {"COMP_WORDS": "rk embed -m syn", "COMP_CWORD": "3"}).stdout.split() == ["syn:embed"]


def test_fast_commands_import_nothing_heavy(syn_daemon):
    for args in (["--help"], ["ps"], ["status"]):
        probe = (f"import sys\nsys.argv = ['rk', *{args!r}]\nfrom rk.app import main\ntry:\n    main()\nexcept SystemExit as e:\n"
                 f"    assert not e.code, e.code\n"
                 f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r}), file=sys.stderr)")
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, RK_SOCKET=str(syn_daemon.socket)))
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines()[-1] == "[]", args


@pytest.mark.parametrize("args", [["ps"], ["status"], ["models"], ["ls", "--json"], ["show", "x:y"], ["load", "x:y"],
                                  ["unload", "x:y"], ["run", "x:y", "hi"], ["embed", "-"], ["--host", "127.0.0.1:9", "ps"]])
def test_no_daemon_is_one_clear_line(tmp_path, args):
    r = rk("--socket", str(tmp_path / "none.sock"), *args, input="text")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no rk daemon" in r.stderr and "rk serve" in r.stderr


def test_json_shapes(syn_daemon):
    models = rk_json(syn_daemon, "models")
    assert {m["name"] for m in models} >= {"syn:chat", "syn:embed", "syn:slow"}
    assert {"name", "capabilities", "backend", "size", "context_length", "details", "loaded", "memory_mb",
            "default"} <= models[0].keys()
    assert rk_json(syn_daemon, "ls") == models

    shown = rk_json(syn_daemon, "show", "syn:embed")
    assert shown["name"] == "syn:embed" and shown["capabilities"] == ["embedding"] and shown["manifest"]["backend"] == "synthetic"
    assert "id" not in shown and "ev" not in shown

    loaded = rk_json(syn_daemon, "load", "syn:embed")
    assert loaded["model"] == "syn:embed" and loaded["loaded"] is True and loaded["memory_mb"] > 0
    assert "load_ms" in loaded["stats"]

    ps = rk_json(syn_daemon, "ps", tcp=True)  # the same over TCP, as from another board
    assert set(ps) == {"queue", "loaded", "pulls"} and ps["queue"] == [] and ps["pulls"] == []
    assert [m["name"] for m in ps["loaded"]] == ["syn:embed"] and {"memory_mb", "expires_at"} <= ps["loaded"][0].keys()

    assert rk_json(syn_daemon, "unload", "syn:embed") == {"model": "syn:embed", "loaded": False}
    status = rk_json(syn_daemon, "status")
    assert status["loaded"] == [] and status["queue"] == []
    assert {"totals", "uptime_s", "runner", "version"} <= status.keys()


def test_tables_and_daemon_errors(syn_daemon):
    env = dict(os.environ, RK_SOCKET=str(syn_daemon.socket))
    r = rk("models", env=env)
    assert r.returncode == 0 and "syn:chat" in r.stdout and "synthetic" in r.stdout
    r = rk("show", "no:such", env=env)
    assert r.returncode == 1 and r.stderr.startswith("rk: model_not_found:") and r.stderr.count("\n") == 1
