"""`rk create NAME -f Modelfile`: a model from a Modelfile (FROM a model, or a local GGUF / .rkllm file).

A local file is uploaded as a blob (skipped when the daemon already has it), then the model is created
with Ollama's `/api/create` over the same socket or TCP port the line protocol uses.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import typer

from rk.cliutil import fail

if TYPE_CHECKING:
    import httpx

    from rk.client import Endpoint


def _http(endpoint: Endpoint) -> httpx.Client:
    """Ollama's HTTP API of the daemon: over its Unix socket, or its TCP port."""
    import httpx

    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    if endpoint.host:
        host = endpoint.host if ":" in endpoint.host else f"{endpoint.host}:11434"
        return httpx.Client(base_url=f"http://{host}", headers=headers, timeout=None)
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(endpoint.socket)), base_url="http://rk",
                        headers=headers, timeout=None)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            yield block


def _upload(client: httpx.Client, path: Path) -> str:
    """The file as a blob on the daemon (sent only when missing); returns its sha256 hex."""
    digest = _sha256(path)
    url = f"/api/blobs/sha256:{digest}"
    if client.head(url).status_code != 200:
        r = client.post(url, content=_chunks(path), headers={"Content-Length": str(path.stat().st_size)})
        if r.status_code >= 300:
            raise fail(f"uploading {path} failed: {_error(r)}")
    return digest


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except ValueError:
        return r.text or f"HTTP {r.status_code}"


def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The new model's NAME[:TAG]."),
    file: Path = typer.Option(Path("Modelfile"), "-f", "--file", exists=True, dir_okay=False, readable=True,
                              help="The Modelfile: FROM (a model or a .gguf / .rkllm file), "
                                   "PARAMETER, SYSTEM, TEMPLATE, MESSAGE."),
) -> None:
    """Create a model from a Modelfile, like `ollama create`."""
    from dataclasses import replace

    import httpx

    from rk.daemon.errors import RkError
    from rk.daemon.store.modelfile import is_path, parse, to_json

    try:
        spec, source = parse(file.read_text(), name)
    except RkError as e:
        raise fail(f"{file}: {e.message}") from None
    try:
        with _http(ctx.obj) as client:
            if is_path(source):
                local = (file.parent / Path(source).expanduser()).resolve()
                if not local.is_file():
                    raise fail(f"FROM {source}: no such file ({local})")
                typer.echo(f"uploading {local.name} ({local.stat().st_size / 2**20:.0f} MiB)", err=True)
                spec = replace(spec, files=((local.name, _upload(client, local)),))
            else:
                spec = replace(spec, base=source)
            with client.stream("POST", "/api/create", content=to_json(spec)) as r:
                if r.status_code != 200:
                    r.read()
                    raise fail(_error(r))
                for line in r.iter_lines():
                    _show(line)
    except httpx.TransportError as e:
        raise fail(f"no rk daemon at {ctx.obj.describe()} ({e}); start one with: rk serve") from None


def _show(line: str) -> None:
    import orjson

    if not line:
        return
    msg: dict[str, Any] = orjson.loads(line)
    if "error" in msg:
        raise fail(str(msg["error"]))
    typer.echo(msg.get("status", ""))
