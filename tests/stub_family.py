"""A small API family written only against the family seam, as a new API would be: its routes, a request
parser to a typed job, a stateful stream formatter (named, numbered events that open and close a block),
its own error shape and key header. Registering it is one line (`FAMILIES + (FAMILY,)`)."""
from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.http.family import Family
from rk.daemon.http.streaming import SSE_HEADERS, JobStream, peer, sse_event
from rk.daemon.http.wire import json_response, read_json
from rk.daemon.jobs import ChatJob, GenSpec, JobStats, Message, ToolCall


def parse(body: Any, client: str) -> tuple[ChatJob, bool]:
    d = f.obj(body)
    model = f.string(d, "model", required=True)
    text = f.string(d, "say", required=True)
    assert model is not None and text is not None
    spec = GenSpec(messages=(Message("user", text),))
    return ChatJob(model=model, spec=spec, source="stub", peer=client), f.boolean(d, "stream", False)


class Numbered:
    """`event: NAME` lines with a running `seq`; the text arrives inside one block that opens and closes."""

    headers = SSE_HEADERS

    def __init__(self) -> None:
        self.seq = 0
        self.open = False

    def _ev(self, name: str, **data: Any) -> bytes:
        self.seq += 1
        return sse_event({"seq": self.seq, **data}, event=name)

    def opening(self) -> bytes:
        return self._ev("begin")

    def token(self, text: str) -> bytes:
        head = b"" if self.open else self._ev("block_open")
        self.open = True
        return head + self._ev("text", text=text)

    def thinking(self, text: str) -> bytes:
        return b""

    def tool_call(self, call: ToolCall, index: int) -> bytes:
        return b""

    def done(self, stats: JobStats, called: bool) -> bytes:
        close = self._ev("block_close") if self.open else b""
        return close + self._ev("end", tokens=stats.generate_tokens)

    def error(self, e: RkError) -> bytes:
        return self._ev("failure", why=e.message)


async def speak(request: web.Request) -> web.StreamResponse:
    job, stream = parse(await read_json(request), peer(request))
    async with JobStream(request, job) as js:
        if stream:
            return await js.relay(request, Numbered())
        gen = await js.generated()
    return json_response({"said": gen.text})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/stub/speak", speak)


def error_body(status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"problem": {"status": status, "detail": message, "kind": code}}


def stub_key(headers: Mapping[str, str]) -> str | None:
    return headers.get("X-Stub-Key")


FAMILY = Family("stub", ("/stub/",), add_routes, error_body, read_key=stub_key, key_hint="X-Stub-Key: KEY",
                cors_headers=("X-Stub-Key",))
