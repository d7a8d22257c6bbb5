"""A `.rkllm` thinking model imported with `--capabilities thinking` (no template: the runtime holds it)
thinks by default and has its reasoning separated on every API, streamed and not, over both C doubles.

With FAKE_RKLLM_THINKING the double answers a run whose `enable_thinking` is set as Qwen3 does: a
`<think>` block first, then the echo of its input; FAKE_RKLLM_RECORD shows the flag each run got.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import ollama
import openai
import pytest

from daemon_proc import DaemonProc, start_daemon
from native_build import rkllm_libs  # noqa: F401  (fixture)

MODEL = "qwen3-npu:0.6b"
THOUGHT = "the user wants an echo."
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module", params=["1.2", "1.3"])
def npu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        rkllm_libs: dict[str, Path]) -> Iterator[tuple[DaemonProc, Path]]:
    tmp = tmp_path_factory.mktemp(f"npu-think-{request.param}")
    record = tmp / "record.tsv"
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True,
                     env={"RK_RKLLM_LIB": str(rkllm_libs[request.param]), "FAKE_RKLLM_RECORD": str(record),
                          "FAKE_RKLLM_THINKING": "1"})
    src = tmp / "Qwen3-0.6B-w8a8-rk3588.rkllm"
    src.write_bytes(b"RKLLM fake weights")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    res = subprocess.run([sys.executable, "-m", "rk", "--socket", str(d.socket), "import", str(src), "--name", MODEL,
                          "--runtime", request.param, "--capabilities", "thinking"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    yield d, record
    d.stop()


def last_flag(record: Path) -> str:
    """enable_thinking ("1"/"0") of the double's last run."""
    runs = [line.split("\t") for line in record.read_text().splitlines() if line.startswith("run\t")]
    return runs[-1][2]


# (think as sent, what enable_thinking becomes, whether reasoning comes back)
OLLAMA_THINK = [(True, "1", True), (None, "1", True), ("high", "1", True), (False, "0", False)]


def ollama_reply(client: ollama.Client, op: str, think: Any, stream: bool) -> tuple[str, str]:
    """(thinking, answer) of one /api/chat or /api/generate request, its stream joined up."""
    if op == "chat":
        r: Any = client.chat(model=MODEL, messages=HI, think=think, stream=stream)
        msgs = [p.message for p in r] if stream else [r.message]
        return "".join(m.thinking or "" for m in msgs), "".join(m.content or "" for m in msgs)
    r = client.generate(model=MODEL, prompt="hi there", think=think, stream=stream)
    parts = list(r) if stream else [r]
    return "".join(p.thinking or "" for p in parts), "".join(p.response for p in parts)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("op", ["chat", "generate"])
@pytest.mark.parametrize("think, flag, thinks", OLLAMA_THINK)
def test_ollama_api(npu: tuple[DaemonProc, Path], op: str, think: Any, flag: str, thinks: bool, stream: bool) -> None:
    d, record = npu
    assert ollama_reply(ollama.Client(host=d.base_url), op, think, stream) == ((THOUGHT if thinks else ""), "hi there ")
    assert last_flag(record) == flag


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("effort, flag, thinks", [(None, "1", True), ("low", "1", True), ("high", "1", True),
                                                  ("none", "0", False)])
def test_openai_chat(npu: tuple[DaemonProc, Path], effort: Any, flag: str, thinks: bool, stream: bool) -> None:
    d, record = npu
    client = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0)
    extra: Any = {"reasoning_effort": effort} if effort else {}
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True, **extra))  # type: ignore[arg-type]
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        thinking = "".join((x.model_extra or {}).get("reasoning_content") or "" for x in deltas)
        content = "".join(x.content or "" for x in deltas)
    else:
        r = client.chat.completions.create(model=MODEL, messages=HI, **extra)  # type: ignore[arg-type]
        msg = r.choices[0].message
        thinking, content = (msg.model_extra or {}).get("reasoning_content") or "", msg.content or ""
    assert (thinking, content) == ((THOUGHT if thinks else ""), "hi there ")
    assert last_flag(record) == flag


@pytest.mark.parametrize("op", ["chat", "generate"])
@pytest.mark.parametrize("think, flag, thinks", OLLAMA_THINK)
def test_line_protocol(npu: tuple[DaemonProc, Path], op: str, think: Any, flag: str, thinks: bool) -> None:
    d, record = npu
    body: dict[str, Any] = {"messages": HI} if op == "chat" else {"prompt": "hi there"}
    if think is not None:
        body["think"] = think
    with d.client() as c:
        events = list(c.events(c.send(op, model=MODEL, **body)))
    thinking = "".join(e["text"] for e in events if e["ev"] == "thinking")
    content = "".join(e["text"] for e in events if e["ev"] == "token")
    assert (thinking, content) == ((THOUGHT if thinks else ""), "hi there ")
    assert last_flag(record) == flag


def test_thinking_off_keeps_a_stray_block_out_of_the_answer(npu: tuple[DaemonProc, Path]) -> None:
    """A model asked not to think may still write a block; it reaches neither the answer nor the reply."""
    d, _ = npu
    msgs = [{"role": "user", "content": "<think> mulling </think> the answer"}]
    r = ollama.Client(host=d.base_url).chat(model=MODEL, messages=msgs, think=False)
    assert (r.message.thinking, r.message.content) == (None, "the answer ")
    o = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0).chat.completions.create(
        model=MODEL, messages=msgs, reasoning_effort="none")  # type: ignore[arg-type]
    assert o.choices[0].message.content == "the answer "
    assert "reasoning_content" not in (o.choices[0].message.model_extra or {})
