"""LiteLLM, the most used gateway in front of Ollama servers, against rk with default settings: its SDK's
`ollama_chat/` and `ollama/` providers, and its proxy server.

LiteLLM posts its JSON as `application/octet-stream`; a relay between it and rk records the request heads,
so these tests prove that exact request reaches rk and is answered (the cross-site guard once refused it).
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import ollama
import openai
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its import would fetch a price list otherwise
import litellm

from daemon_proc import DaemonProc, end_process

T = TypeVar("T")
HI = [{"role": "user", "content": "say hello to the relay"}]
TEXTS = ["first text", "the second text"]
_HEAD = re.compile(rb"(?:POST|GET) (\S+) HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n")


class Relay:
    """A TCP relay in front of rk, on its own thread and event loop, that keeps every byte the clients
    sent, to read the request heads back. (LiteLLM makes a blocking call to /api/show inside its own event
    loop after each reply, so a relay sharing that loop would stall.)"""

    def __init__(self, port: int) -> None:
        self.port, self.sent = port, bytearray()
        self._loop = asyncio.new_event_loop()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server = self._loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Hang up on both sides of every connection (clients keep theirs open for reuse), then stop."""
        async def stop() -> None:
            self._server.close()
            for w in self._writers:
                w.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            while data := await src.read(65536):
                if keep:
                    self.sent += data
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False), return_exceptions=True)

    def content_types(self, path: str) -> list[str]:
        """The Content-Type of each request to `path`, as sent ("" when there was none)."""
        out = []
        for m in _HEAD.finditer(bytes(self.sent)):
            if m.group(1).decode() == path:
                heads = dict(line.split(":", 1) for line in m.group(2).decode().lower().splitlines())
                out.append(heads.get("content-type", "").strip())
        return out


def through_relay(d: DaemonProc, work: Callable[[str], Awaitable[T]]) -> tuple[T, Relay]:
    """Run `work(base_url of the relay)` with the relay in front of the daemon."""
    assert d.tcp_port is not None
    relay = Relay(d.tcp_port)
    try:
        return asyncio.run(work(relay.base_url)), relay
    finally:
        relay.close()


def test_sdk_chat_streamed_and_not(syn: DaemonProc) -> None:
    want = ollama.Client(host=syn.base_url).chat(model="syn:chat", messages=HI).message.content

    async def work(base: str) -> tuple[Any, str]:
        whole = await litellm.acompletion(model="ollama_chat/syn:chat", api_base=base, messages=HI)
        stream = await litellm.acompletion(model="ollama_chat/syn:chat", api_base=base, messages=HI, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream]
        return whole, "".join(parts)

    (whole, streamed), relay = through_relay(syn, work)
    assert whole.choices[0].message.content == want and streamed == want
    assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens > 0
    assert relay.content_types("/api/chat") == ["application/octet-stream"] * 2  # LiteLLM's own type, accepted


def test_sdk_embedding(syn: DaemonProc) -> None:
    want = ollama.Client(host=syn.base_url).embed(model="syn:embed", input=TEXTS).embeddings

    async def work(base: str) -> Any:
        return await litellm.aembedding(model="ollama/syn:embed", api_base=base, input=TEXTS)

    r, relay = through_relay(syn, work)
    got = [item["embedding"] for item in r.data]
    assert len(got) == 2 and all(g == pytest.approx(w) for g, w in zip(got, want))
    assert relay.content_types("/api/embed") == ["application/json"]


# ---- the proxy server (`litellm[proxy]`) -------------------------------------------------------

_UVICORN_PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
# `litellm[proxy]` lives beside the venv, where the README's test command installs it (`pip install --target`):
# it pins rich<14 and uvloop<0.22, which the venv's own tools cannot have, so only the proxy's process sees it.
PROXY = Path(sys.prefix) / "litellm-proxy"


@pytest.mark.skipif(not (PROXY / "litellm_proxy_extras").is_dir(),
                    reason=f"litellm[proxy] is not installed in {PROXY} (see the README's test command)")
def test_proxy_chat_and_embed(syn: DaemonProc, tmp_path: Path) -> None:
    """`litellm --config` in front of rk, used through the `openai` package as its users do."""
    assert syn.tcp_port is not None
    relay = Relay(syn.tcp_port)
    cfg = tmp_path / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: chat
    litellm_params: {{model: ollama_chat/syn:chat, api_base: "{relay.base_url}"}}
  - model_name: embed
    litellm_params: {{model: ollama/syn:embed, api_base: "{relay.base_url}", drop_params: true}}
""")  # the openai package always sends `encoding_format`, which LiteLLM's ollama provider refuses unless dropped
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "PYTHONPATH": str(PROXY)}
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import litellm; litellm.run_server()", "--config", str(cfg),
                                 "--host", "127.0.0.1", "--port", "0", "--num_workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (bound := _UVICORN_PORT.search(log.read_text(errors="replace"))):  # port 0: uvicorn says which
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the proxy did not start:\n" + log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        base = f"http://127.0.0.1:{bound.group(1)}"
        assert httpx.get(base + "/health/liveliness", timeout=10).status_code == 200
        client = openai.OpenAI(base_url=base, api_key="sk-unused", max_retries=0)
        want = ollama.Client(host=syn.base_url).chat(model="syn:chat", messages=HI).message.content
        chat = client.chat.completions.create(model="chat", messages=HI)  # type: ignore[arg-type]
        assert chat.choices[0].message.content == want
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="chat", messages=HI, stream=True)  # type: ignore[arg-type]
                           if c.choices)
        assert streamed == want
        emb = client.embeddings.create(model="embed", input=TEXTS)
        want_vecs = ollama.Client(host=syn.base_url).embed(model="syn:embed", input=TEXTS).embeddings
        assert [e.embedding for e in emb.data] == [pytest.approx(w) for w in want_vecs]
        assert relay.content_types("/api/chat") == ["application/octet-stream"] * 2
        assert relay.content_types("/api/embed") == ["application/json"]
    finally:
        relay.close()
        end_process(proc)
