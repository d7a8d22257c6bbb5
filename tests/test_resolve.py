"""One resolved request: defaults are applied once at admission, whichever API a job came through.

The request wins, then the model's Modelfile, then the engine's own defaults; the model's SYSTEM and
MESSAGE turns, `tool_choice: "none"` and the thinking default are settled before the runner sees the job.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import ollama
import openai
import pytest
from aiohttp.test_utils import TestClient
from test_inproc_http import run  # noqa: F401  (fixture)

from rk.daemon.jobs import ChatJob, GenOptions, GenSpec, Message, Tool
from rk.daemon.resolve import resolve
from rk.daemon.service import Service
from rk.daemon.store.models import Manifest

from daemon_proc import DaemonProc, start_daemon, write_manifest
from fake_runner import FakeRunner
from native_build import register_npu_models, rkllm_libs  # noqa: F401  (fixture)

MODEL = Manifest("warm:1", "synthetic", capabilities=("completion", "tools", "thinking"), context_length=8192,
                 defaults={"temperature": 0.2, "max_tokens": 64}, system="Be brief.",
                 messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])


def test_the_request_wins_then_the_modelfile() -> None:
    job = resolve(ChatJob("warm:1", GenSpec(messages=(Message("user", "q"),), options=GenOptions(max_tokens=5))), MODEL, 4096)
    assert (job.options.temperature, job.options.max_tokens) == (0.2, 5)
    assert job.options.num_ctx == 4096  # the server default, within the model's 8192
    assert [(m.role, m.content) for m in job.spec.messages] == [
        ("system", "Be brief."), ("user", "hi"), ("assistant", "hello"), ("user", "q")]
    own = resolve(ChatJob("warm:1", GenSpec(messages=(Message("system", "Mine."), Message("user", "q")))), MODEL, 4096)
    assert [m.content for m in own.spec.messages] == ["Mine.", "hi", "hello", "q"]  # its system prompt, then the turns
    raw = resolve(ChatJob("warm:1", GenSpec(prompt="<s>as is", raw=True)), MODEL, 4096)
    assert raw.spec.messages == () and raw.spec.prompt == "<s>as is"


def test_tool_choice_none_offers_no_tools_and_a_thinking_model_thinks_unless_told_not() -> None:
    tools = (Tool("f"),)
    job = resolve(ChatJob("warm:1", GenSpec(messages=(Message("user", "q"),), tools=tools, tool_choice="none")), MODEL, 4096)
    assert (job.spec.tools, job.spec.tool_choice, job.spec.think) == ((), "auto", True)
    off = resolve(ChatJob("warm:1", GenSpec(messages=(Message("user", "q"),), think=False)), MODEL, 4096)
    assert off.spec.think is False
    plain = Manifest("plain:1", "synthetic", context_length=2048)
    assert resolve(ChatJob("plain:1", GenSpec(prompt="q")), plain, 4096).spec.think is None
    assert resolve(ChatJob("plain:1", GenSpec(prompt="q")), plain, 4096).options.num_ctx == 2048  # never past its own


@pytest.fixture
def models(tmp_path: Path) -> Path:  # the in-process stack's models, with a Modelfile's defaults
    m = tmp_path / "models"
    write_manifest(m, "chat:a", backend="synthetic", capabilities=["completion"], context_length=4096,
                   defaults={"temperature": 0.2}, system="Be brief.")
    return m


def test_every_api_hands_the_runner_the_same_resolved_job(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        hi = [{"role": "user", "content": "hello there"}]
        assert (await c.post("/api/chat", json={"model": "chat:a", "messages": hi, "stream": False})).status == 200
        assert (await c.post("/v1/chat/completions", json={"model": "chat:a", "messages": hi})).status == 200
        assert (await c.post("/api/generate", json={"model": "chat:a", "prompt": "hello there", "stream": False})).status == 200
        specs = runner.received
        assert len(specs) == 3 and specs[0] == specs[1] == specs[2]
        assert specs[0].options.temperature == 0.2 and specs[0].options.num_ctx == 4096
        assert [m.role for m in specs[0].messages] == ["system", "user"]
    run(body)


@pytest.fixture(scope="module")
def npu(tmp_path_factory: pytest.TempPathFactory, rkllm_libs: dict[str, Path]) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("resolve-npu")
    register_npu_models(tmp / "models")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True, env={"RK_RKLLM_LIB": str(rkllm_libs["1.3"])})
    yield d
    d.stop()


def sampled(text: str) -> dict[str, Any]:
    return {k: float(v) for k, v in (w.split("=") for w in text.split())}


def test_a_modelfile_temperature_is_what_both_apis_sample_at(npu: DaemonProc) -> None:
    """The NPU double answers "[[sampling]]" with the sampling the runtime was given."""
    client = ollama.Client(host=npu.base_url)
    assert client.create(model="cool:npu", from_="npu:chat", parameters={"temperature": 0.2}).status == "success"
    ask = [{"role": "user", "content": "[[sampling]]"}]
    via_ollama = sampled(client.chat(model="cool:npu", messages=ask).message.content or "")
    oa = openai.OpenAI(base_url=npu.base_url + "/v1", api_key="x")
    via_openai = sampled(oa.chat.completions.create(model="cool:npu", messages=ask).choices[0].message.content or "")  # type: ignore[arg-type]
    assert via_ollama["temperature"] == pytest.approx(0.2) and via_openai == via_ollama
    hot = oa.chat.completions.create(model="cool:npu", messages=ask, temperature=0.9)  # type: ignore[arg-type]
    assert sampled(hot.choices[0].message.content or "")["temperature"] == pytest.approx(0.9)  # the request wins
    r = httpx.post(npu.base_url + "/api/chat", json={"model": "cool:npu", "messages": ask, "stream": False}, timeout=30)
    assert r.status_code == 200


def test_status_shows_the_resolved_budget(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        gate = runner.gate("hold on")
        task = asyncio.create_task(c.post("/api/chat", json={"model": "chat:a", "stream": False,
                                                             "messages": [{"role": "user", "content": "hold on"}]}))
        await runner.started["hold on"].wait()
        while not svc.scheduler.status().queue[0].progress.done:  # type: ignore[union-attr]  # noqa: ASYNC110 - token progress has no event
            await asyncio.sleep(0.01)
        (view,) = svc.scheduler.status().queue
        assert view.progress is not None and view.progress.total == 4096 - 5  # no max_tokens: what the context leaves
        gate.set()
        assert (await task).status == 200
    run(body)
