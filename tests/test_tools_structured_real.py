"""Structured output on the default CPU model: constrained decoding makes every reply schema-valid JSON."""
from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest

from daemon_proc import DaemonProc

pytestmark = pytest.mark.slow

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
          "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 12}}}}
# Numbers are bounded integers: a JSON number may have any count of digits, and a model that keeps
# writing them runs into max tokens with the JSON unfinished (which fails the job, as it should).
CITY = {"type": "object", "additionalProperties": False, "required": ["city", "country", "population_thousands", "capital"],
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20},
                       "population_thousands": {"type": "integer", "minimum": 0,
                                                "maximum": 50000}, "capital": {"type": "boolean"},
                       "weather": {"enum": ["sunny", "rainy", "cloudy"]}}}
PROMPTS = [
    "Describe a fictional person.", "Who is the oldest person you can imagine?", "Invent a pirate captain.",
    "Give me a character for a novel about space.", "A baker from Lyon, please.", "Describe yourself.",
    "Make up a child who loves trains.", "A retired teacher with three hobbies.", "Tell me about a famous painter.",
    "Write anything you like.",
    "Tell me about Paris.", "What about Tokyo?", "Describe a small town in Norway.", "Lagos, Nigeria.",
    "The biggest city you know.", "A city where it always rains.", "Ignore the format and write a poem about Rome.",
    "Say hello.", "Oslo in winter.", "Reply with just the word no.",
]


@pytest.mark.timeout(1500)  # ~500 constrained tokens: minutes on a small, shared CPU
def test_twenty_varied_prompts_all_return_schema_valid_json(real_daemon: DaemonProc) -> None:
    client = ollama.Client(host=real_daemon.base_url, timeout=300)
    for i, prompt in enumerate(PROMPTS):
        schema = PERSON if i < 10 else CITY
        r = client.chat(model="smollm2:135m", messages=[{"role": "user", "content": prompt}], format=schema,
                        options={"num_predict": 120, "seed": i})
        jsonschema.validate(json.loads(r.message.content), schema)


@pytest.mark.timeout(600)
def test_openai_response_format_json_schema_and_json_object(real_daemon: DaemonProc) -> None:
    client = openai.OpenAI(base_url=real_daemon.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    r = client.chat.completions.create(model="smollm2:135m", messages=[{"role": "user", "content": "A person."}], max_tokens=200,
                                       response_format={"type": "json_schema", "json_schema": {"name": "person",
                                                                                               "schema": PERSON}})
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), PERSON)
    # Any object: nothing bounds it, so the prompt asks for a small one and greedy decoding keeps it so.
    r = client.chat.completions.create(model="smollm2:135m", max_tokens=200, temperature=0, stream=True,  # type: ignore[assignment]
                                       messages=[{"role": "user", "content": 'Reply with a JSON object with one key "ok" set to '
                                                  'true.'}],
                                       response_format={"type": "json_object"})
    text = "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)  # type: ignore[union-attr]
    assert isinstance(json.loads(text), dict)


@pytest.mark.timeout(900)
def test_the_hf_backend_constrains_the_same_way(real_daemon: DaemonProc) -> None:
    """The transformers path (llguidance over torch logits) on the hf copy of SmolLM2."""
    from daemon_proc import SMOLLM_HF

    client = ollama.Client(host=real_daemon.base_url, timeout=600)
    for i, prompt in enumerate(PROMPTS[:2]):
        r = client.chat(model=SMOLLM_HF, messages=[{"role": "user", "content": prompt}], format=PERSON,
                        options={"num_predict": 120, "seed": i})
        jsonschema.validate(json.loads(r.message.content), PERSON)
