"""Property tests: whatever a client sends, the parsers give a valid job or a clear RkError, never a crash.

The pure parsers (line protocol, OpenAI and Ollama adapters) are fed arbitrary JSON-like values, the
shapes they expect with arbitrary values in every field, and arbitrary bytes. A live variant sends
generated lines over one real connection to a real daemon: each line gets exactly one final answer
and the connection is never dropped.
"""
from __future__ import annotations

import io
import json
import math
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rk.daemon.errors import RkError
from rk.daemon.families.line import adapter as lineproto
from rk.daemon.families.ollama import adapter as ollama
from rk.daemon.families.openai import adapter as openai
from rk.daemon.jobs import ChatJob, EmbedJob, GenOptions, ModelAction
from rk.daemon.runner import wire
from rk.daemon.settings import Settings
from rk.daemon.store import modelfile

from daemon_proc import DaemonProc

SETTINGS = Settings.from_env({}, models_dir=Path("/nonexistent/models"), bundled=False)
INT64 = 2**63 - 1
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies --------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=12) | st.sampled_from(["", " ", "syn:chat", "5m", "-1", "user", "text", "base64", 1e30, 2**64]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

FIELDS = ["id", "op", "model", "name", "messages", "prompt", "input", "options", "stream", "stream_options",
          "max_tokens", "max_completion_tokens", "num_predict", "temperature", "top_p", "top_k", "seed", "stop",
          "repeat_penalty", "num_ctx", "keep_alive", "raw", "system", "template", "suffix", "images", "n",
          "best_of", "logprobs", "echo", "encoding_format", "dimensions", "truncate", "target", "key", "from",
          "parameters", "source", "destination", "files", "include_usage", "role", "content", "type", "text"]
OPS = ["chat", "generate", "embed", "load", "unload", "cancel", "status", "models", "show", "version", "nope"]

message = st.fixed_dictionaries({}, optional={"role": json_values | st.sampled_from(["user", "system", "developer"]),
                                              "content": json_values | st.text(max_size=20), "images": json_values})
field_value = (json_values | st.lists(message, max_size=3) | st.sampled_from(OPS)
               | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4))
# Objects with the names the parsers look for, holding anything: reaches far past the first type check.
shaped = st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=8)
CHAT = {"model": "syn:chat", "messages": [{"role": "user", "content": "hi"}]}
VALID_BASES = [CHAT, {"model": "syn:chat", "prompt": "hi"}, {"model": "syn:embed", "input": ["a", "b"]},
               {"from": "syn:chat", "model": "x"}, {"source": "syn:chat", "destination": "x"}]


def nearly_valid(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid request with a few fields replaced or added: the parser gets all the way to the deep checks."""
    return st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=3).map(lambda extra: base | extra)


bodies = shaped | json_values | st.one_of([nearly_valid(b) for b in VALID_BASES])


def to_line(value: Any) -> bytes:
    """JSON text the way any client may write it: integers of any size (the stdlib allows them, orjson not)."""
    return json.dumps(value).encode()


# ---- what a valid result is --------------------------------------------------------------------


def check_options(o: GenOptions) -> None:
    for name in ("max_tokens", "top_k", "seed", "num_ctx"):
        v = getattr(o, name)
        assert v is None or (type(v) is int and -INT64 <= v <= INT64), f"{name}={v!r}"
    for name in ("temperature", "top_p", "repeat_penalty"):
        v = getattr(o, name)
        assert v is None or (type(v) is float and not math.isnan(v)), f"{name}={v!r}"
    assert isinstance(o.stop, tuple) and all(isinstance(s, str) and s for s in o.stop)


def check_job(job: Any) -> None:
    """A job the scheduler and the runner can take as it is: right types, and a wire form that serialises."""
    assert isinstance(job, (ChatJob, EmbedJob, ModelAction)), job
    assert isinstance(job.model, str) and job.model
    assert job.keep_alive_s is None or type(job.keep_alive_s) is float
    if isinstance(job, ChatJob):
        spec = job.spec
        assert spec.messages or spec.prompt is not None
        assert all(m.role in ("system", "user", "assistant", "tool") and isinstance(m.content, str) for m in spec.messages)
        assert spec.prompt is None or isinstance(spec.prompt, str)
        check_options(job.options)
        cmd = wire.Generate(1, job.model, spec)
        frame = wire.read_frame_sync(io.BytesIO(wire.encode(cmd)))
        assert frame is not None and wire.decode(frame) == cmd  # what the runner process receives, intact
    elif isinstance(job, EmbedJob):
        assert job.texts and all(isinstance(t, str) for t in job.texts)
    else:
        assert job.action in ("load", "unload")


def parses_or_refuses(parse: Callable[[Any], Any], value: Any) -> Any:
    """Run a parser; an RkError is a fine answer, anything else escaping is the bug this file hunts."""
    try:
        return parse(value)
    except RkError as e:
        assert e.code and e.message and e.status >= 400
        return None


def job_of(result: Any) -> Any:
    return getattr(result, "job", None)


# ---- the pure parsers --------------------------------------------------------------------------

HTTP_PARSERS: dict[str, Callable[[Any], Any]] = {
    "openai.chat": lambda b: openai.parse_chat(b, "peer"),
    "openai.completion": lambda b: openai.parse_completion(b, "peer"),
    "openai.embeddings": lambda b: openai.parse_embeddings(b, "peer"),
    "ollama.generate": lambda b: ollama.parse_generate(b, "peer"),
    "ollama.chat": lambda b: ollama.parse_chat(b, "peer"),
    "ollama.embed": lambda b: ollama.parse_embed(b, "peer"),
    "ollama.embeddings": lambda b: ollama.parse_legacy_embeddings(b, "peer"),
    "ollama.create": ollama.parse_create,
    "ollama.copy": ollama.parse_copy,
}


@pytest.mark.parametrize("name", sorted(HTTP_PARSERS))
def test_http_adapter_gives_job_or_rkerror(name: str) -> None:
    """Every HTTP parser, on any decoded JSON body."""
    parse = HTTP_PARSERS[name]

    @PROPERTY
    @given(bodies)
    def run(body: Any) -> None:
        result = parses_or_refuses(parse, body)
        if job_of(result) is not None:
            check_job(result.job)
        if isinstance(result, modelfile.CreateSpec):
            orjson.dumps(result.defaults)  # saved in the new manifest
            GenOptions().over(result.defaults)

    run()


@PROPERTY
@given(json_values)
def test_keep_alive_gives_seconds_or_rkerror(value: Any) -> None:
    result = parses_or_refuses(ollama.keep_alive, value)
    assert result is None or type(result) is float


def parse_line(line: bytes) -> lineproto.Request:
    return lineproto.parse_line(line, SETTINGS, "peer")


def check_request(req: lineproto.Request | None) -> None:
    if req is None:
        return
    assert isinstance(req.id, str) and req.op in lineproto.JOB_OPS + lineproto.INFO_OPS
    if req.op in lineproto.JOB_OPS:
        check_job(req.job)


@PROPERTY
@given(st.one_of([shaped] + [nearly_valid(b | {"id": "x", "op": op}) for b in VALID_BASES[:3] for op in ("chat", "generate",
                                                                                                         "embed")]).map(to_line))
def test_line_parser_on_shaped_lines(line: bytes) -> None:
    check_request(parses_or_refuses(parse_line, line))


@PROPERTY
@given(st.binary(max_size=200) | json_values.map(to_line))
def test_line_parser_on_any_bytes(line: bytes) -> None:
    check_request(parses_or_refuses(parse_line, line))


def test_out_of_range_integers_are_refused_not_crashing() -> None:
    """orjson reads 1e30 and 10**30 as floats; taken as ints they would not serialise to the runner."""
    for raw in (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1e30}',
                b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1000000000000000000000000000000}'):
        result = parses_or_refuses(HTTP_PARSERS["openai.chat"], orjson.loads(raw))
        if result is not None:
            check_job(result.job)


# ---- one live connection -----------------------------------------------------------------------

FINAL_EVENTS = {"done", "error", "snapshot", "models", "model", "version"}


class LineSocket:
    """A raw line-protocol connection: send bytes, read one JSON event at a time."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the daemon dropped the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return orjson.loads(line)

    def answer(self) -> list[dict[str, Any]]:
        """Events up to and including the one final answer to the last line."""
        events = [self.read()]
        while events[-1]["ev"] not in FINAL_EVENTS:
            events.append(self.read())
        return events

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def line_sock(daemon_factory: Callable[..., DaemonProc]) -> Iterator[LineSocket]:
    d = daemon_factory()
    s = LineSocket(d.socket)
    s.send(b'{"id":"hello","op":"version"}')  # the first byte picks the line protocol
    assert s.answer()[-1]["ev"] == "version"
    yield s
    s.close()


def live_line(d: dict[str, Any], n: int) -> bytes:
    """A generated request made safe to run: its own id, short jobs on the synthetic models, no `watch`."""
    d = dict(d)
    if d.get("op") == "watch":
        d["op"] = "status"
    if isinstance(d.get("id"), (str, int)) and not isinstance(d.get("id"), bool):
        d["id"] = f"r{n}"
    if d.get("op") in ("chat", "generate", "embed", "load", "unload") and not isinstance(d.get("model"), str):
        d["model"] = "syn:embed" if d["op"] == "embed" else "syn:chat"
    return to_line(d)


def test_live_connection_answers_every_line(line_sock: LineSocket) -> None:
    """Generated lines over one connection: each gets exactly one final answer under its id; never a drop."""
    counter = iter(range(10**9))
    lines = (shaped.map(lambda d: live_line(d, next(counter)))
             | st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b and b.strip()))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(lines)
    def run(line: bytes) -> None:
        line_sock.send(line)
        events = line_sock.answer()
        final = events[-1]
        try:
            sent = orjson.loads(line)
        except orjson.JSONDecodeError:
            sent = None
        rid = lineproto.request_id(sent)
        assert final["id"] == rid, (line, events)
        assert all(e["id"] == rid for e in events), (line, events)
        assert sum(e["ev"] in FINAL_EVENTS for e in events) == 1
        if final["ev"] == "error":
            assert final["code"] != "internal", (line, final)

    run()
    line_sock.send(b'{"id":"bye","op":"version"}')
    assert line_sock.answer()[-1]["ev"] == "version"
