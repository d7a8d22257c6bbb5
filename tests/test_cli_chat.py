"""`rk chat` driven in a pseudo-terminal against a real daemon (synthetic models: they echo every message's words)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pexpect
import pytest

RK = str(Path(sys.executable).parent / "rk")
PROMPT = ">>> "
STATS = re.compile(r"wait \d+ ms · .*prefill \d+ ms \(\d+ tok\) · generate \d+ tok at [\d.]+ tok/s · mem \d+ MB")


def cli_env(d: Any, tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, RK_SOCKET=str(d.socket), TERM="xterm-256color", XDG_STATE_HOME=str(tmp_path / "state"))


def spawn_chat(d: Any, tmp_path: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(RK, ["chat", *args], env=cli_env(d, tmp_path), encoding="utf-8", timeout=60,
                          dimensions=(40, 120))
    child.expect_exact(PROMPT)
    return child


def wait_queue_empty(d: Any, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    with d.client() as c:
        while True:
            snap = c.call("status")
            if not snap["queue"] or time.monotonic() > deadline:
                return snap
            time.sleep(0.05)


def test_two_turns_carry_history_and_model_switches(syn_daemon, tmp_path):
    child = spawn_chat(syn_daemon, tmp_path, "syn:chat", "--max-tokens", "6")  # syn:slow would echo forever
    child.sendline("alpha beta")
    child.expect("alpha beta")
    child.expect(STATS)
    child.expect_exact(PROMPT)

    child.sendline("gamma")  # turn 2 is sent with turn 1's question and answer before it
    child.expect("alpha beta alpha beta gamma")
    child.expect(STATS)
    child.expect_exact(PROMPT)

    child.sendline("/model syn:slow")
    child.expect_exact("model: syn:slow")
    child.sendline("/clear")
    child.expect_exact("conversation cleared")
    child.sendline("delta")
    child.expect("delta delta delta delta delta delta")  # syn:slow repeats the prompt; syn:chat says it once
    child.expect(STATS)
    child.expect_exact(PROMPT)
    with syn_daemon.client() as c:
        assert "syn:slow" in [m["name"] for m in c.call("status")["loaded"]]

    transcript = tmp_path / "t.json"
    child.sendline(f"/save {transcript}")
    child.expect_exact("saved 2 messages")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    saved = orjson.loads(transcript.read_bytes())
    assert saved["model"] == "syn:slow"
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert (tmp_path / "state" / "rk" / "history").read_text().splitlines()[-2:] == [f"/save {transcript}", "/exit"]


def test_multiline_input_and_system_prompt(syn_daemon, tmp_path):
    child = spawn_chat(syn_daemon, tmp_path, "syn:chat", "--raw")
    child.sendline("/system sysword")
    child.expect_exact("system prompt set")
    child.sendline("first \\")
    child.expect_exact("... ")
    child.sendline("second")
    child.expect("sysword first second")
    child.expect(STATS)
    child.sendline('"""')
    child.sendline("third")
    child.sendline('fourth"""')
    child.expect("sysword first second sysword first second third fourth")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_cancels_the_reply_and_keeps_the_prompt(syn_daemon, tmp_path):
    child = spawn_chat(syn_daemon, tmp_path, "syn:slow")
    with syn_daemon.client() as other:  # occupy the queue for 2 s so the chat job waits behind it
        busy = other.send("chat", model="syn:slow", messages=[{"role": "user", "content": "busy"}], options={"max_tokens": 40})
        next(ev for ev in other.events(busy) if ev["ev"] == "started")
        child.sendline("word")  # syn:slow repeats it until cancelled
        child.expect_exact("queued · 1 ahead")
        child.expect("word word word")
        child.sendintr()
        child.expect_exact("cancelled")
        child.expect_exact(PROMPT)
        snap = wait_queue_empty(syn_daemon, within=3.0)
    assert snap["queue"] == []
    assert snap["totals"].get("cancelled", 0) >= 1

    child.sendline("/model syn:chat")
    child.sendline("still here")
    child.expect("still here")
    child.expect(STATS)
    child.expect_exact(PROMPT)
    child.sendintr()  # Ctrl-C at the prompt leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_piped_stdin_prints_one_reply_and_exits_0(syn_daemon, tmp_path):
    r = subprocess.run([RK, "chat", "syn:chat"], input="one two\nthree\n", capture_output=True, text=True,
                       env=cli_env(syn_daemon, tmp_path), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["one", "two", "three"]
    assert r.stderr == ""


def test_unknown_model_is_one_line_and_the_session_goes_on(syn_daemon, tmp_path):
    child = spawn_chat(syn_daemon, tmp_path, "no:such")
    child.sendline("hello")
    child.expect_exact("model_not_found")
    child.expect_exact(PROMPT)
    child.sendline("/model syn:embed")
    child.expect_exact("embedding model")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("args", [["chat", "syn:chat"], ["run", "syn:chat", "hi"]])
def test_missing_daemon_is_one_clear_line(tmp_path, args):
    env = dict(os.environ, RK_SOCKET=str(tmp_path / "nobody.sock"))
    r = subprocess.run([RK, *args], input="hi", capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "rk serve" in r.stderr
