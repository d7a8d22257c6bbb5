"""Structured output: `format` as a schema, and a finished reply checked against it with a message
that names where and why it fails. Schemas come from pydantic, as clients build them
(`format=Model.model_json_schema()` in Ollama's docs, `response_format` in the openai package)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from rk.daemon.errors import RkError
from rk.daemon.structured import schema_for, validate


class Address(BaseModel):
    city: str
    zip: str | None = None


class Country(BaseModel):
    name: str
    capital: str
    languages: list[str]
    population: int
    addresses: list[Address] = []


COUNTRY = Country.model_json_schema()


def test_schema_for_json_is_any_object_and_a_schema_is_itself() -> None:
    assert schema_for("json") == {"type": "object"}
    assert schema_for(None) is None
    assert schema_for(COUNTRY) is COUNTRY


@pytest.mark.parametrize(("fmt", "words"), [
    ({"type": "objekt"}, ["not a valid JSON schema", "$.type"]),
    ({"type": "object", "properties": {"a": {"type": 5}}}, ["not a valid JSON schema", "$.properties.a.type"]),
    ("xml", ["format must be"]),
    (["json"], ["format must be"]),
])
def test_a_bad_format_is_the_clients_error(fmt: Any, words: list[str]) -> None:
    with pytest.raises(RkError) as e:
        schema_for(fmt)
    assert e.value.code == "bad_request" and e.value.param == "format"
    assert all(w in e.value.message for w in words), e.value.message


def test_valid_replies_pass() -> None:
    reply = {"name": "France", "capital": "Paris", "languages": ["French"], "population": 68000000,
             "addresses": [{"city": "Lyon"}]}
    assert validate(json.dumps(reply), COUNTRY) is None
    assert validate('  {"a": [1, 2]}\n', "json") is None
    assert validate("anything at all", None) is None


@pytest.mark.parametrize(("reply", "fmt", "words"), [
    ('{"name": "France", "capital": "Paris", "languages": ["French"]}', COUNTRY,
     ["$", "'population' is a required property"]),
    ('{"name": "France", "capital": "Paris", "languages": ["French", 3], "population": 1}', COUNTRY,
     ["$.languages[1]", "3 is not of type 'string'"]),
    ('{"name": "F", "capital": "P", "languages": [], "population": 1, "addresses": [{"zip": "1"}]}', COUNTRY,
     ["$.addresses[0]", "'city' is a required property"]),
    ('{"name": "F", "capital": "P", "languages": [], "population": "many"}', COUNTRY,
     ["$.population", "'many' is not of type 'integer'"]),
    ('{"name": "France", "capital": ', COUNTRY, ["not valid JSON", "line 1 column"]),
    ("Sure! Here is the JSON: {}", "json", ["not valid JSON"]),
    ("[1, 2]", "json", ["$", "is not of type 'object'"]),
    ('{"x": NaN}', "json", ["not valid JSON", "NaN"]),
    ('{"a b": 1}', {"type": "object", "properties": {"a b": {"type": "string"}}}, ['$["a b"]', "1 is not of type 'string'"]),
])
def test_failures_name_the_place_and_the_reason(reply: str, fmt: Any, words: list[str]) -> None:
    problem = validate(reply, fmt)
    assert problem is not None
    assert all(w in problem for w in words), problem


objects = st.dictionaries(st.text(max_size=6), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=4), i, max_size=3), max_leaves=8), max_size=4)


@settings(max_examples=100, deadline=None)
@given(value=objects, other=st.none() | st.booleans() | st.integers() | st.text() | st.lists(st.integers()))
def test_property_json_format_accepts_exactly_objects(value: dict, other: Any) -> None:
    assert validate(json.dumps(value), "json") is None
    problem = validate(json.dumps(other), "json")
    assert problem is not None and "is not of type 'object'" in problem
