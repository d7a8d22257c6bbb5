"""The agents' APIs on the bundled SmolLM2 (llama.cpp): count_tokens with the real tokenizer and template,
structured output through both APIs, and the captured Claude Code and Codex turns answered by SmolLM2 taught
a chat template that renders tools, with a context that fits them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest

from rk.daemon.store.models import ModelStore

from daemon_proc import DaemonProc, start_daemon, write_manifest

pytestmark = pytest.mark.slow
CHAT = "smollm2:135m"
AGENT = "smollm2-agents:135m"
FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
          "required": ["colour"], "additionalProperties": False}


def test_count_tokens_is_the_prompt_the_model_is_given(real_daemon: DaemonProc) -> None:
    """The count equals the input tokens of the same request run for real (same template, same tokenizer)."""
    client = anthropic.Anthropic(base_url=real_daemon.base_url, api_key="x", max_retries=0, timeout=120)
    msgs: list[Any] = [{"role": "user", "content": "Name a colour of the rainbow."}]
    counted = client.messages.count_tokens(model=CHAT, system="Answer in one word.", messages=msgs)
    ran = client.messages.create(model=CHAT, system="Answer in one word.", messages=msgs, max_tokens=1)
    assert counted.input_tokens == ran.usage.input_tokens + (ran.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens > len("Answer in one word. Name a colour of the rainbow.".split())  # template tokens too


def test_structured_output_on_the_default_model(real_daemon: DaemonProc) -> None:
    oa = openai.OpenAI(base_url=real_daemon.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    r = oa.responses.create(model=CHAT, input="Pick a colour.", max_output_tokens=32,
                            text={"format": {"type": "json_schema", "name": "c", "schema": SCHEMA}})
    assert json.loads(r.output_text)["colour"] in ("red", "green", "blue")
    body = {"model": CHAT, "max_tokens": 32, "messages": [{"role": "user", "content": "Pick a colour."}],
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}
    m = httpx.post(real_daemon.base_url + "/v1/messages", json=body, timeout=120).json()
    assert json.loads(m["content"][0]["text"])["colour"] in ("red", "green", "blue")


@pytest.fixture(scope="module")
def agent_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """SmolLM2 with a 16k context and Qwen2.5's chat template (ChatML, like its own, but it renders tools), on a
    daemon whose stall watchdog allows a cold 12k-token prefill on a slow CPU (minutes)."""
    tmp = tmp_path_factory.mktemp("agents-real")
    m = ModelStore(Path("/nonexistent-rk-models"), bundled=True).get(CHAT)
    fields: dict[str, Any] = m.to_dict()
    fields.pop("name")
    template = (FIXTURES / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    fields.update(files={"gguf": str(m.path("gguf"))}, bundled=True, family="qwen2", capabilities=["completion", "tools"],
                  params={**m.params, "num_ctx": 16384, "chat_template": template})
    write_manifest(tmp / "models", AGENT, **fields)
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True, env={"RK_STALL_TIMEOUT": "3600"})
    yield d
    d.stop()


@pytest.mark.parametrize(("route", "name"), [
    ("/v1/messages?beta=true", "claude-code-2.1.332_turn2_tool_result_messages.json"),
    ("/v1/responses", "codex-0.171.0_turn2_function_call_output_responses.json")])
@pytest.mark.timeout(3600)
def test_captured_agent_turns_are_answered(agent_daemon: DaemonProc, route: str, name: str) -> None:
    """The whole captured body (tools, system, history, the tool's result), streamed as the agent asks."""
    body = json.loads((FIXTURES / "agents" / name).read_text())["json"]
    body |= {"model": AGENT, "temperature": 0}
    body |= {"max_tokens": 16} if "messages" in route else {"max_output_tokens": 16}
    r = httpx.post(agent_daemon.base_url + route, json=body, timeout=3600)
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "error" not in kinds and "response.failed" not in kinds, events[-1]
    last = events[-2] if "messages" in route else events[-1]
    usage = last["usage"] if "messages" in route else last["response"]["usage"]
    prompt = (usage["input_tokens"] + usage["cache_read_input_tokens"]) if "messages" in route else usage["input_tokens"]
    assert prompt > 8000  # the tools are in the prompt: SmolLM2's own template would drop them
