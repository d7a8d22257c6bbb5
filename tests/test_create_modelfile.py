"""The Modelfile parser and the `/api/create` request reader, in process."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rk.daemon.errors import RkError
from rk.daemon.families.ollama.adapter import parse_create as from_request
from rk.daemon.store.modelfile import parse

HEX = "ab" * 32
MODELFILE = '''# a comment
FROM ./SmolLM2.gguf
PARAMETER temperature 0.2
parameter num_ctx 4096
PARAMETER stop "<|im_end|>"
PARAMETER stop </s>
SYSTEM """You are terse.
Answer in one line."""
TEMPLATE "{{ .Prompt }}"
MESSAGE user Is the sky blue?
MESSAGE assistant """Yes."""
LICENSE MIT
'''


def test_modelfile_instructions() -> None:
    spec, source = parse(MODELFILE, "mine")
    assert source == "./SmolLM2.gguf"
    assert spec.parameters == {"temperature": 0.2, "num_ctx": 4096, "stop": ["<|im_end|>", "</s>"]}
    # `/api/create` turns them into GenOptions fields (checked there: the store takes them as given)
    created = from_request({"model": "mine", "modelfile": MODELFILE.replace("./SmolLM2.gguf", "syn:chat")})
    assert created.defaults == {"temperature": 0.2, "num_ctx": 4096, "stop": ("<|im_end|>", "</s>")}
    assert spec.system == "You are terse.\nAnswer in one line." and spec.template == "{{ .Prompt }}"
    assert spec.messages == (("user", "Is the sky blue?"), ("assistant", "Yes.")) and spec.license == "MIT"


@pytest.mark.parametrize("text, message", [
    ("PARAMETER temperature 0.1", "FROM is required"),
    ("FROM x\nPARAMETER mirostat 1", "unknown parameter 'mirostat'"),
    ("FROM x\nPARAMETER top_k lots", "needs a int"),
    ('FROM x\nSYSTEM """never closed', "unterminated"),
    ("FROM x\nMESSAGE robot hi", "MESSAGE role"),
    ("FROM x\nQUANTIZE q4", "unknown instruction QUANTIZE"),
    ("FROM x\nADAPTER ./lora.gguf", "ADAPTER"),
])
def test_modelfile_errors(text: str, message: str) -> None:
    with pytest.raises(RkError, match=message):
        parse(text, "m")


def test_structured_request() -> None:
    spec = from_request({"model": "m", "from": "base", "system": "s", "parameters": {"num_predict": 5, "temperature": 0.2},
                         "messages": [{"role": "user", "content": "hi"}], "license": ["MIT", "Apache"]})
    assert (spec.base, spec.system, spec.defaults, spec.messages, spec.license) == (
        "base", "s", {"max_tokens": 5, "temperature": 0.2}, (("user", "hi"),), "MIT\nApache")
    files = from_request({"model": "m", "files": {"m.gguf": f"sha256:{HEX}"}, "stream": False})
    assert files.files == (("m.gguf", HEX),) and files.stream is False


def test_legacy_modelfile_string() -> None:
    spec = from_request({"model": "m", "modelfile": "FROM syn:chat\nSYSTEM be brief\nPARAMETER top_k 5"})
    assert (spec.base, spec.system, spec.defaults) == ("syn:chat", "be brief", {"top_k": 5})
    blob = from_request({"model": "m", "modelfile": f"FROM @sha256:{HEX}"})
    assert blob.files == (("model", HEX),)
    with pytest.raises(RkError, match="cannot be read by the daemon"):
        from_request({"model": "m", "modelfile": "FROM /etc/models/x.gguf"})


@pytest.mark.parametrize("body, message", [
    ({"model": "m"}, "neither 'from' or 'files'"),
    ({"model": "m", "files": {"a.gguf": "sha256:x"}}, "expected sha256"),
    ({"model": "m", "from": "a", "files": {"a.gguf": f"sha256:{HEX}"}}, "not both"),
    ({"model": "m", "from": "a", "quantize": "q4_K_M"}, "quantize"),
    ({"model": "m", "from": "a", "parameters": {"temperature": "hot"}}, "temperature"),
    ({"model": "m", "from": "a", "messages": [{"role": "x", "content": "y"}]}, "messages"),
])
def test_request_errors(body: dict[str, object], message: str) -> None:
    with pytest.raises(RkError, match=message):
        from_request(body)


@given(st.text())
def test_any_modelfile_text_parses_or_is_refused(text: str) -> None:
    try:
        spec, source = parse(text, "m")
    except RkError:
        return
    assert source and isinstance(spec.parameters, dict)
