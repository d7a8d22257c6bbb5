"""Tools and thinking on the NPU path, end to end over both C doubles of librkllmrt.so.

The double echoes its input, so a user message holding a `<tool_call>` block makes "the runtime" write
that block; it records every `rkllm_set_function_tools` call and each run's role, enable_thinking and
input (FAKE_RKLLM_RECORD), which is what these tests read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import ollama
import openai
import pytest

from daemon_proc import DaemonProc, start_daemon, write_manifest
from native_build import rkllm_libs  # noqa: F401  (fixture)
from tool_models import call

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time",
                                         "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module", params=["1.2", "1.3"])
def npu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        rkllm_libs: dict[str, Path]) -> Iterator[tuple[DaemonProc, Path]]:
    tmp = tmp_path_factory.mktemp(f"npu-tools-{request.param}")
    models = tmp / "models"
    mdir = write_manifest(models, "npu:qwen3", backend="rkllm", family="qwen3", context_length=4096, files={"model": "m.rkllm"},
                       capabilities=["completion", "tools", "thinking"], params={"thinking": True})
    (mdir / "m.rkllm").write_bytes(b"RKLLM fake weights")
    record = tmp / "record.tsv"
    d = start_daemon(tmp, models_dir=models, bundled=False, tcp=True,
                     env={"RK_RKLLM_LIB": str(rkllm_libs[request.param]), "FAKE_RKLLM_RECORD": str(record)})
    yield d, record
    d.stop()


def records(path: Path, kind: str) -> list[list[str]]:
    """The double's records of one kind, fields unescaped."""
    if not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [[f.replace("\\n", "\n").replace("\\t", "\t") for f in r[1:]] for r in rows if r[0] == kind]


def test_tools_reach_set_function_tools_once_per_tool_set(npu: tuple[DaemonProc, Path]) -> None:
    d, record = npu
    client = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0)
    before = len(records(record, "set_function_tools"))
    msgs: Any = [{"role": "system", "content": "You help."}, {"role": "user", "content": "hello"}]
    for _ in range(2):
        client.chat.completions.create(model="npu:qwen3", messages=msgs, tools=[WEATHER])
    sets = records(record, "set_function_tools")[before:]
    assert len(sets) == 1
    system, tools, response = sets[0]
    assert (system, response) == ("You help.", "tool_response")
    assert json.loads(tools) == [WEATHER]
    client.chat.completions.create(model="npu:qwen3", messages=msgs, tools=[WEATHER, TIME])
    client.chat.completions.create(model="npu:qwen3", messages=msgs)
    sets = records(record, "set_function_tools")[before:]
    assert [json.loads(s[1]) for s in sets] == [[WEATHER], [WEATHER, TIME], []]


def test_a_tool_call_block_from_the_runtime_is_a_tool_call_on_both_apis(npu: tuple[DaemonProc, Path]) -> None:
    d, _ = npu
    block = call("get_weather", city="Oslo")
    o = openai.OpenAI(base_url=d.base_url + "/v1", api_key="unused", max_retries=0).chat.completions.create(
        model="npu:qwen3", messages=[{"role": "user", "content": block}], tools=[WEATHER])
    calls = o.choices[0].message.tool_calls or []
    assert o.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    r = ollama.Client(host=d.base_url).chat(model="npu:qwen3", messages=[{"role": "user", "content": block}],
                                            tools=[WEATHER], stream=True)
    chunks = list(r)
    got = [(c.function.name, dict(c.function.arguments)) for ch in chunks for c in ch.message.tool_calls or []]
    assert got == [("get_weather", {"city": "Oslo"})]
    assert "tool_call" not in "".join(ch.message.content or "" for ch in chunks)


def test_tool_results_go_back_as_one_tool_input(npu: tuple[DaemonProc, Path]) -> None:
    """The official server's shape: role "tool", a JSON array of every result; with the call still in the KV
    cache only that input is sent."""
    d, record = npu
    client = ollama.Client(host=d.base_url)
    msgs: list[Any] = [{"role": "user", "content": call("get_weather", city="Oslo") + "\n" + call("get_weather", city="Rome")}]
    first = client.chat(model="npu:qwen3", messages=msgs, tools=[WEATHER])
    assert len(first.message.tool_calls or []) == 2
    msgs += [first.message, {"role": "tool", "content": "4 C"}, {"role": "tool", "content": "21 C"}]
    client.chat(model="npu:qwen3", messages=msgs, tools=[WEATHER])
    role, _, text = records(record, "run")[-1]
    assert role == "tool" and json.loads(text) == ["4 C", "21 C"]


@pytest.mark.parametrize("think, flag", [(False, "0"), (True, "1"), ("high", "1"), (None, "1")])
def test_think_reaches_the_runtime_as_enable_thinking(npu: tuple[DaemonProc, Path], think: Any, flag: str) -> None:
    """Per request; unset, the manifest's `params.thinking` (on for this model)."""
    d, record = npu
    ollama.Client(host=d.base_url).chat(model="npu:qwen3", messages=[{"role": "user", "content": f"ping {think}"}],
                                        think=think)
    role, enabled, text = records(record, "run")[-1]
    assert (role, enabled, text) == ("user", flag, f"ping {think}")


def test_on_token_input_the_tokenizers_template_renders_tools_and_thinking(tmp_path: Path) -> None:
    """With a tokenizer registered the runtime's template is bypassed: tools and the thinking switch go
    through the tokenizer's own template (here a word-level one whose words map back to ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rk.daemon.backends.rkllm._inputs import InputBuilder
    from rk.daemon.backends.rkllm._lib import ABIS
    from rk.daemon.jobs import ChatJob, GenSpec, Message, Tool
    from rk.daemon.resolve import resolve
    from rk.daemon.store.models import Manifest

    words = ["[UNK]", "user", "assistant", "hi", "tool", "get_weather", "nothink"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = ("{% for t in tools or [] %}tool {{ t.function.name }} {% endfor %}"
                          "{% for m in messages %}{{ m.role }} {{ m.content }} {% endfor %}"
                          "{% if add_generation_prompt %}assistant {% if not enable_thinking %}nothink {% endif %}{% endif %}")
    fast.save_pretrained(str(tmp_path / "tok"))
    m = Manifest(name="t:t", backend="rkllm", files={"model": "m.rkllm", "tokenizer": "tok"}, dir=tmp_path,
                 params={"thinking": True})
    b = InputBuilder(m, ABIS["1.3"])

    def sent(spec: GenSpec) -> tuple[list[str], bool]:
        spec = resolve(ChatJob("t:t", spec), m, 512).spec  # what the daemon sends the runner
        run = b.chat(spec, 512, None).run
        ids = run.struct.token_input.input_ids
        return [words[ids[i]] for i in range(run.tokens or 0)], bool(run.struct.enable_thinking)

    hi = (Message("user", "hi"),)
    weather = (Tool("get_weather", "", {"type": "object"}),)
    assert sent(GenSpec(messages=hi, tools=weather)) == (["tool", "get_weather", "user", "hi", "assistant"], True)
    assert sent(GenSpec(messages=hi, tools=weather, tool_choice="none")) == (["user", "hi", "assistant"], True)
    assert sent(GenSpec(messages=hi, think=False)) == (["user", "hi", "assistant", "nothink"], False)


def test_structured_output_is_generated_then_validated(npu: tuple[DaemonProc, Path]) -> None:
    """The NPU cannot constrain decoding: the reply is checked against the schema and a mismatch is named."""
    d, _ = npu
    client = ollama.Client(host=d.base_url)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = client.chat(model="npu:qwen3", messages=[{"role": "user", "content": '{"n": 3}'}], format=schema, think=False)
    assert json.loads(r.message.content) == {"n": 3}
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="npu:qwen3", messages=[{"role": "user", "content": '{"n": "three"}'}], format=schema, think=False)
    assert e.value.status_code == 500
    assert e.value.error == ("npu:qwen3 did not produce the requested format: the reply does not match the schema "
                             "at $.n: 'three' is not of type 'integer'")


def test_a_thinking_reply_is_reused_from_the_kv_cache_without_its_reasoning(npu: tuple[DaemonProc, Path]) -> None:
    """Clients send a reply back without its reasoning; the KV cache, which holds the reasoning too, still
    continues the conversation, so only the new message is sent."""
    d, record = npu
    client = ollama.Client(host=d.base_url)
    msgs: list[Any] = [{"role": "user", "content": "<think> weigh it </think> the answer"}]
    first = client.chat(model="npu:qwen3", messages=msgs)
    assert (first.message.thinking, first.message.content) == ("weigh it", "the answer ")  # the double ends words with a space
    msgs += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": "and then"}]
    client.chat(model="npu:qwen3", messages=msgs)
    assert records(record, "run")[-1] == ["user", "1", "and then"]
