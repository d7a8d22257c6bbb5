"""`rk chat` with a thinking model (the scripted double with Qwen3's template) in a pseudo-terminal, and
`rk top`'s job phases."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from test_cli_chat import PROMPT, cli_env

from daemon_proc import DaemonProc
from tool_models import HOLD, call, script

RK = str(Path(sys.executable).parent / "rk")
STATS = re.compile(r"generate \d+ tok \((\d+) thinking\) at")


def spawn(d: DaemonProc, tmp_path: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(RK, ["chat", *args], env=cli_env(d, tmp_path), encoding="utf-8", timeout=20, dimensions=(40, 120))
    child.expect_exact(PROMPT)
    return child


def test_thinking_streams_then_folds_and_is_counted(tools_daemon: DaemonProc, tmp_path: Path) -> None:
    child = spawn(tools_daemon, tmp_path, "qwen:tools", "--raw")
    child.sendline(script("<think>Plan the reply carefully.</think>Done here."))
    child.expect_exact("Plan the reply carefully.")  # streamed as it comes
    child.expect_exact("thought (4 words): Plan the reply carefully.")  # then folded to one line
    child.expect_exact("Done here.")
    child.expect(STATS)
    assert int(child.match.group(1)) > 0
    child.expect_exact(PROMPT)
    child.sendline("/think off")
    child.expect_exact("thinking off")
    child.sendline(script("<think>Plan the reply carefully.</think>Done again."))
    assert child.expect([r"thought \(", "Done again."]) == 1
    child.expect(r"generate \d+ tok at")  # no thinking counted: the reasoning was dropped
    child.sendeof()
    child.expect(pexpect.EOF)


def test_no_think_flag_and_format_json(tools_daemon: DaemonProc, tmp_path: Path) -> None:
    env = cli_env(tools_daemon, tmp_path)
    r = subprocess.run([RK, "chat", "qwen:tools", "--no-think", "--format", "json"], capture_output=True, text=True,
                       input=script('<think>hidden</think>{"ok": true}'), env=env, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, '{"ok": true}'), r.stderr
    r = subprocess.run([RK, "chat", "qwen:tools", "--format", "json"], capture_output=True, text=True,
                       input=script("not json"), env=env, timeout=30)
    assert r.returncode != 0 and "the reply is not valid JSON" in r.stderr
    r = subprocess.run([RK, "chat", "plain:chat", "--think"], capture_output=True, text=True, input="hi", env=env, timeout=30)
    assert r.returncode != 0 and '"plain:chat" does not support thinking' in r.stderr


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("reply, first, phase", [
    (f"<think>Hmm{HOLD}</think>Yes", "thinking", "thinking"),
    (f"<think>Hmm</think>Ye{HOLD}s", "token", "answering"),
    (call("get_weather", city="Oslo") + HOLD, "tool_call", "calling tool"),
])
def test_rk_ps_and_top_show_the_phase(tools_daemon: DaemonProc, reply: str, first: str, phase: str) -> None:
    """The double holds mid-reply; the job's state (what `rk ps` and `rk top` print) names the phase."""
    gate = Path(tools_daemon.models_dir).parent / "gate"
    gate.unlink(missing_ok=True)
    env = dict(cli_env(tools_daemon, Path(tools_daemon.models_dir).parent), COLUMNS="200")
    with tools_daemon.client() as c:
        rid = c.send("chat", model="qwen:tools", tools=[WEATHER], messages=[{"role": "user", "content": script(reply)}])
        next(e for e in c.events(rid) if e["ev"] == first)
        ps = subprocess.run([RK, "ps"], capture_output=True, text=True, env=env, timeout=30)
        assert phase in ps.stdout, ps.stdout
        gate.touch()
        assert c.wait(rid)["ev"] == "done"
    gate.unlink()
