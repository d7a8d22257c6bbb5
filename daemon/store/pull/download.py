"""One hub file into a partial file that survives restarts: an HTTP `Range` request continues it.

The bytes are hashed as they arrive (after re-hashing what the partial already held), the size is
capped at the hub's own figure, and the caller compares the digest before anything is registered.
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Callable

import aiohttp

from rk.daemon.errors import RkError
from rk.daemon.store.pull.blobs import _write, hasher
from rk.daemon.store.pull.refs import RepoFile

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def _hash_existing(partial: Path, h: object) -> int:
    """Feed what a kept partial holds into the hash; returns its length."""
    n = 0
    with open(partial, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)  # type: ignore[attr-defined]
            n += len(block)
    return n


def _resume_from(partial: Path, h: object, size: int) -> int:
    """Hash what a kept partial holds and return its length, or empty it (none yet, or longer than `size`)."""
    if partial.exists() and partial.stat().st_size <= size:
        return _hash_existing(partial, h)
    partial.write_bytes(b"")
    return 0


async def download(session: aiohttp.ClientSession, url: str, headers: dict[str, str], partial: Path,
                   want: RepoFile, progress: Callable[[int], None]) -> str:
    """Bring `partial` to `want.size` bytes, resuming from what it holds; returns the hex digest of it all."""
    h = hasher(want.digest, want.size)
    have = await asyncio.to_thread(_resume_from, partial, h, want.size)
    progress(have)
    if have == want.size:
        return h.hexdigest()
    req_headers = dict(headers) | ({"Range": f"bytes={have}-"} if have else {})
    try:
        async with session.get(url, headers=req_headers) as resp:
            mode = "ab"
            if resp.status == 200 and have:  # the server ignored the range: start over from byte 0
                h, have, mode = hasher(want.digest, want.size), 0, "wb"
            elif resp.status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m[1]) != have:
                    raise RkError("hub_unavailable", f"the hub answered a range request for {want.path} with "
                                  f"{resp.headers.get('Content-Range')!r}")
            elif resp.status != 200:
                raise RkError("hub_unavailable", f"the hub answered {resp.status} for {want.path}")
            with await asyncio.to_thread(open, partial, mode) as f:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if have + len(chunk) > want.size:
                        # the hub serves something other than it announced: keep none of it
                        await asyncio.to_thread(partial.unlink)
                        raise RkError("hub_unavailable", f"{want.path} is larger than the {want.size} bytes the hub "
                                      "announced; refused")
                    await asyncio.to_thread(_write, f, h, chunk)
                    have += len(chunk)
                    progress(have)
    except aiohttp.ClientError as e:
        raise RkError("hub_unavailable", f"downloading {want.path} stopped at {have} of {want.size} bytes ({e}); "
                      "pull again to resume") from None
    if have != want.size:
        raise RkError("hub_unavailable", f"downloading {want.path} stopped at {have} of {want.size} bytes; "
                      "pull again to resume")
    return h.hexdigest()
