"""The whole HTTP stack and the line protocol in-process, over a fake runner: middleware (CORS, Host,
API key, content types, body limits), every error shape, capability refusals, a full queue. Real
aiohttp app and handlers, the real scheduler and adapters; only the runner process is replaced, so
the suite runs in seconds and every case is deterministic."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from rk.daemon.families.line.connection import LineConnection
from rk.daemon.families.registry import FAMILIES
from rk.daemon.http.app import build_app
from rk.daemon.http.family import Family
from rk.daemon.service import Service
from rk.daemon.settings import Settings

import stub_family
from daemon_proc import write_manifest
from fake_runner import FakeRunner

LIMIT = 10.0  # the longest any case may take before it fails: generous, never a measurement
HI = [{"role": "user", "content": "hello there friend"}]
TOOLS = [{"type": "function", "function": {"name": "now", "description": "The time", "parameters": {"type": "object"}}}]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    m = tmp_path / "models"
    write_manifest(m, "chat:a", backend="synthetic", capabilities=["completion"], context_length=4096)
    write_manifest(m, "embed:a", backend="synthetic", capabilities=["embedding"], context_length=512)
    return m


@contextlib.asynccontextmanager
async def stack(models: Path, tmp_path: Path, families: tuple[Family, ...] = FAMILIES,
                **settings: Any) -> AsyncIterator[tuple[TestClient, Service, FakeRunner]]:
    """The daemon's service and HTTP app on a loopback TCP port, its scheduler running, a fake runner."""
    runner = FakeRunner()
    service = Service.build(Settings(models_dir=models, socket=tmp_path / "s.sock", bundled=False, quiet=True,
                                     default_chat_model="chat:a", default_embed_model="embed:a", **settings), runner)
    loop = asyncio.create_task(service.scheduler.run())
    client = TestClient(TestServer(build_app(service, families)))
    await client.start_server()
    try:
        yield client, service, runner
    finally:
        await client.close()
        loop.cancel()


Body = Callable[[TestClient, Service, FakeRunner], Awaitable[None]]


@pytest.fixture
def run(models: Path, tmp_path: Path) -> Callable[..., None]:
    """Run `body(client, service, runner)` against a fresh stack; keyword arguments are settings."""
    def go(body: Body, **settings: Any) -> None:
        async def main() -> None:
            async with stack(models, tmp_path, **settings) as (client, service, runner):
                await asyncio.wait_for(body(client, service, runner), LIMIT)
        asyncio.run(main())
    return go


# ---- the middleware ----------------------------------------------------------------------------

def test_a_chat_answers_on_both_apis_with_the_request_id_echoed(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        r = await c.post("/api/chat", json={"model": "chat:a", "messages": HI, "stream": False},
                         headers={"X-Request-Id": "abc"})
        assert r.status == 200 and r.headers["X-Request-Id"] == "abc"
        assert (await r.json())["message"]["content"] == "hello there friend "
        r = await c.post("/v1/chat/completions", json={"model": "chat:a", "messages": HI})
        assert r.status == 200 and len(r.headers["X-Request-Id"]) == 32
        assert (await r.json())["choices"][0]["message"]["content"] == "hello there friend "
        assert [cmd for cmd, _ in runner.log if cmd == "generate"] == ["generate", "generate"]
    run(body)


def test_cors_preflight_and_headers_for_allowed_origins_and_403_for_others(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        r = await c.options("/api/chat", headers={"Origin": "http://localhost:3000", **pre})
        assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = await c.options("/api/chat", headers={"Origin": "https://evil.example", **pre})
        assert r.status == 403 and "evil.example" in (await r.json())["error"]
        r = await c.post("/v1/chat/completions", json={"model": "chat:a", "messages": HI},
                         headers={"Origin": "https://evil.example"})
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        assert runner.log == []  # nothing a refused page sent reached the queue
        r = await c.get("/api/tags", headers={"Origin": "https://app.example"})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    run(body, cors_origins="https://app.example")


def test_a_rebinding_host_name_is_refused_on_keyless_tcp(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        r = await c.get("/api/tags", headers={"Host": "attacker.example:11434"})
        assert r.status == 403 and "RK_HOSTS" in (await r.json())["error"]
        assert (await c.get("/api/tags", headers={"Host": "localhost:11434"})).status == 200
        assert (await c.get("/api/tags", headers={"Host": "board.lan"})).status == 200  # RK_HOSTS
    run(body, hosts="board.lan")


def test_the_api_key_is_required_in_each_apis_shape_and_the_root_stays_open(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        r = await c.get("/api/tags")
        assert r.status == 401 and "API key" in (await r.json())["error"]
        r = await c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        err = (await r.json())["error"]
        assert r.status == 401 and err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await c.get("/")).status == 200
        # with a key, any Host is served: a page cannot authenticate, so rebinding gains nothing
        assert (await c.get("/api/tags", headers={"Authorization": "Bearer s3cret", "Host": "x.example"})).status == 200
    run(body, api_key="s3cret")


def test_a_page_cannot_post_a_simple_content_type(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        data = orjson.dumps({"model": "chat:a", "messages": HI})
        r = await c.post("/api/chat", data=data, headers={"Content-Type": "text/plain", "Origin": "http://localhost"})
        assert r.status == 415 and "application/json" in (await r.json())["error"]
        r = await c.post("/v1/chat/completions", data=data,
                         headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://localhost"})
        assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"
        assert runner.log == []
    run(body)


def test_an_oversize_body_is_413_in_each_shape_and_the_next_request_is_served(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        big = {"model": "chat:a", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = await c.post("/api/chat", json=big)
        assert r.status == 413 and "4096 bytes" in (await r.json())["error"]
        r = await c.post("/v1/embeddings", json={"model": "embed:a", "input": "x" * 5000})
        assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
        assert (await c.post("/api/chat", json={"model": "chat:a", "messages": HI, "stream": False})).status == 200
    run(body, max_body_bytes=4096)


# ---- error shapes --------------------------------------------------------------------------------

OLLAMA_CASES = [  # (path, body, status, words in the error)
    ("/api/chat", b"{not json", 400, "JSON"),
    ("/api/chat", {"model": "nope:1", "messages": HI}, 404, "nope:1"),
    ("/api/chat", {"model": "chat:a", "messages": "hi"}, 400, "messages"),
    ("/api/chat", {"model": "chat:a", "messages": HI, "tools": TOOLS}, 400, "chat:a does not support tools"),
    ("/api/chat", {"model": "chat:a", "messages": HI, "think": True}, 400, '"chat:a" does not support thinking'),
    ("/api/chat", {"model": "embed:a", "messages": HI}, 400, "does not support chat"),
    ("/api/embed", {"model": "chat:a", "input": "x"}, 400, "does not support embeddings"),
    ("/api/embed", {"model": "embed:a", "input": 5}, 400, "input"),
    ("/api/generate", {"model": "chat:a", "prompt": 5}, 400, "prompt"),
]


@pytest.mark.parametrize(("path", "payload", "status", "words"), OLLAMA_CASES)
def test_ollama_errors_are_an_error_string_with_the_right_status(run: Callable[..., None], path: str, payload: Any,
                                                                  status: int, words: str) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        r = await c.post(path, data=data, headers={"Content-Type": "application/json"})
        got = await r.json()
        assert r.status == status and set(got) == {"error"} and words in got["error"], got
        assert [cmd for cmd, _ in runner.log if cmd in ("generate", "embed")] == []
    run(body)


OPENAI_CASES = [  # (path, body, status, code, param)
    ("/v1/chat/completions", b"[1,", 400, "bad_request", None),
    ("/v1/chat/completions", {"model": "nope:1", "messages": HI}, 404, "model_not_found", "model"),
    ("/v1/chat/completions", {"model": "chat:a", "messages": HI, "tools": TOOLS}, 400, "unsupported", "tools"),
    ("/v1/chat/completions", {"model": "chat:a", "messages": HI, "temperature": "hot"}, 400, "bad_request", "temperature"),
    ("/v1/embeddings", {"model": "chat:a", "input": "x"}, 400, "not_embedding_model", "model"),
    ("/v1/embeddings", {"model": "embed:a", "input": [[1, 2]]}, 400, "bad_request", "input"),  # token arrays
]


@pytest.mark.parametrize(("path", "payload", "status", "code", "param"), OPENAI_CASES)
def test_openai_errors_carry_message_type_param_and_code(run: Callable[..., None], path: str, payload: Any,
                                                          status: int, code: str | None, param: str | None) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        r = await c.post(path, data=data, headers={"Content-Type": "application/json"})
        err = (await r.json())["error"]
        assert r.status == status and set(err) == {"message", "type", "param", "code"}, err
        assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]
        if code is not None:
            assert err["code"] == code
    run(body)


def test_a_full_queue_is_503_with_retry_after_and_the_queued_jobs_still_finish(run: Callable[..., None]) -> None:
    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        gate = runner.gate("first job")
        first = asyncio.create_task(c.post("/api/chat", json={"model": "chat:a", "stream": False,
                                                              "messages": [{"role": "user", "content": "first job"}]}))
        await runner.started["first job"].wait()
        second = asyncio.create_task(c.post("/api/chat", json={"model": "chat:a", "stream": False, "messages": HI}))
        while svc.scheduler.status().depth < 1:  # noqa: ASYNC110 - polls the daemon's state as a client would
            await asyncio.sleep(0.01)
        r = await c.post("/v1/chat/completions", json={"model": "chat:a", "messages": HI})
        assert r.status == 503 and r.headers["Retry-After"] and (await r.json())["error"]["code"] == "queue_full"
        gate.set()
        assert (await first).status == 200 and (await second).status == 200
    run(body, max_queue=1)


# ---- the line protocol over a socket pair ------------------------------------------------------

def test_the_line_protocol_runs_a_chat_and_answers_bad_lines_with_errors(models: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(models, tmp_path) as (_, service, runner):
            ours, theirs = socket.socketpair()
            reader, writer = await asyncio.open_connection(sock=theirs)
            conn = LineConnection(service, reader, writer, "unix", needs_key=False)
            serving = asyncio.create_task(conn.serve())
            r, w = await asyncio.open_connection(sock=ours)

            async def ask(line: bytes, until: str) -> list[dict[str, Any]]:
                w.write(line + b"\n")
                got: list[dict[str, Any]] = []
                while not got or got[-1]["ev"] not in (until, "error"):
                    got.append(orjson.loads(await asyncio.wait_for(r.readline(), LIMIT)))
                return got

            evs = await ask(orjson.dumps({"id": 1, "op": "chat", "model": "chat:a", "messages": HI}), "done")
            assert [e["ev"] for e in evs][-4:] == ["token", "token", "token", "done"]
            assert "".join(e["text"] for e in evs if e["ev"] == "token") == "hello there friend "
            bad = await ask(b"{oops", "error")
            assert bad[-1]["id"] is None and bad[-1]["code"] == "bad_request"
            unknown = await ask(orjson.dumps({"id": "u", "op": "frobnicate"}), "error")
            assert unknown[-1]["id"] == "u" and unknown[-1]["code"] == "bad_request"
            refused = await ask(orjson.dumps({"id": 2, "op": "chat", "model": "chat:a", "messages": HI, "tools": TOOLS}), "error")
            assert refused[-1]["code"] == "unsupported" and "tools" in refused[-1]["message"]
            w.close()
            await asyncio.wait_for(serving, LIMIT)
    asyncio.run(main())


# ---- a new family on the seam -------------------------------------------------------------------

def test_a_family_registered_with_one_line_serves_streams_errors_and_keys_its_own_way(models: Path, tmp_path: Path) -> None:
    async def main() -> None:
        families = FAMILIES + (stub_family.FAMILY,)
        async with stack(models, tmp_path, families, api_key="k") as (c, service, runner):
            key = {"X-Stub-Key": "k"}
            r = await c.post("/stub/speak", json={"model": "chat:a", "say": "hello there friend"}, headers=key)
            assert r.status == 200 and await r.json() == {"said": "hello there friend "}
            r = await c.post("/stub/speak", json={"model": "chat:a", "say": "one two", "stream": True}, headers=key)
            frames = [b for b in (await r.read()).split(b"\n\n") if b]
            names = [fr.split(b"\n")[0].removeprefix(b"event: ").decode() for fr in frames]
            assert names == ["begin", "block_open", "text", "text", "block_close", "end"]
            assert [orjson.loads(fr.split(b"data: ")[1])["seq"] for fr in frames] == [1, 2, 3, 4, 5, 6]
            for path, payload in (("/stub/speak", {"model": "nope:1", "say": "x"}), ("/stub/missing", {})):
                r = await c.post(path, json=payload, headers=key)
                assert r.status == 404 and set((await r.json())["problem"]) == {"status", "detail", "kind"}
            r = await c.post("/stub/speak", json={"model": "chat:a", "say": "x"}, headers={"Authorization": "Bearer k"})
            assert r.status == 401 and "X-Stub-Key: KEY" in (await r.json())["problem"]["detail"]
            r = await c.get("/api/tags", headers=key)  # the other families keep their own key header and shape
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
            r = await c.options("/stub/speak", headers={"Origin": "http://localhost", "Access-Control-Request-Method": "POST"})
            assert "X-Stub-Key" in r.headers["Access-Control-Allow-Headers"]
    asyncio.run(main())
