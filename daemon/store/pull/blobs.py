"""Model files kept once by content digest in the store's blobs directory; models hard-link them.

A pulled layer, an uploaded blob (`POST /api/blobs`) and a model created from either share one inode,
so a second model of the same file costs no disk, and a blob whose only link is the blobs directory's
own is one no model uses: `prune` removes those (after a delete, or a pull that replaced a file).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import AsyncIterator

from rk.daemon.errors import RkError
from rk.daemon.store.models import ModelStore
from rk.daemon.store.pull.refs import Digest

Inode = tuple[int, int]


def hasher(digest: Digest, size: int) -> hashlib._Hash:
    """A hash object that ends at `digest.hex` for the right bytes: git ids hash a `blob <size>\\0` header first."""
    if digest.algo == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1()
    h.update(f"blob {size}\0".encode())
    return h


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def check_space(path: Path, needed: int) -> None:
    """Refuse before downloading what the disk cannot hold (with 64 MiB to spare for everything else)."""
    free = free_bytes(path)
    if needed + (64 << 20) > free:
        raise RkError("insufficient_storage", f"not enough disk space in {path}: {needed / 2**20:.0f} MiB needed, "
                      f"{free / 2**20:.0f} MiB free")


class Blobs:
    def __init__(self, store: ModelStore) -> None:
        self.root = store.blobs_dir
        self.temp = store.temp_dir

    def path(self, digest: Digest) -> Path:
        return self.root / digest.filename

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def partial(self, digest: Digest) -> Path:
        """Where a download of `digest` accumulates; the same path after a restart, so it resumes."""
        self.temp.mkdir(parents=True, exist_ok=True)
        return self.temp / f"{digest.filename}.part"

    def adopt(self, verified: Path, digest: Digest) -> Path:
        """Move a verified file into the blobs directory (same filesystem: an atomic rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(verified, self.path(digest))
        return self.path(digest)

    def link(self, digest: Digest, dest: Path) -> None:
        """Place a blob at `dest` (inside a model's directory), replacing what was there in one rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.path(digest), tmp)
        except OSError:  # a filesystem without hard links: a copy, which prune then never counts as shared
            shutil.copyfile(self.path(digest), tmp)
        os.replace(tmp, dest)

    @staticmethod
    def inodes(directory: Path) -> set[Inode]:
        """The hard-linked files under a model directory, taken before it is removed or rewritten."""
        out: set[Inode] = set()
        if directory.is_dir():
            for p in directory.rglob("*"):
                st = p.lstat()
                if p.is_file() and st.st_nlink > 1:
                    out.add((st.st_dev, st.st_ino))
        return out

    def prune(self, candidates: set[Inode]) -> int:
        """Remove the blobs among `candidates` that no model links any more; returns how many."""
        removed = 0
        if not candidates or not self.root.is_dir():
            return 0
        for p in self.root.iterdir():
            st = p.lstat()
            if (st.st_dev, st.st_ino) in candidates and st.st_nlink == 1:
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    async def ingest(self, chunks: AsyncIterator[bytes], digest: Digest, size_hint: int | None) -> Path:
        """Store an uploaded blob, refused unless its bytes hash to `digest` (then nothing is kept)."""
        store_root = self.root.parent
        check_space(store_root, size_hint or 0)
        tmp = self.temp / f"upload-{digest.filename}-{os.getpid()}-{id(chunks)}"
        self.temp.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        try:
            with await asyncio.to_thread(open, tmp, "wb") as f:
                async for chunk in chunks:
                    if size_hint is None:
                        check_space(store_root, len(chunk))  # a body of unknown length must not fill the disk
                    await asyncio.to_thread(_write, f, h, chunk)
            if h.hexdigest() != digest.hex:
                raise RkError("bad_request", f"the uploaded bytes hash to sha256:{h.hexdigest()}, not {digest.wire}")
            return self.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)


def _write(f: object, h: hashlib._Hash, chunk: bytes) -> None:
    """Off the event loop: append and hash one chunk, flushed so a killed daemon keeps it."""
    f.write(chunk)  # type: ignore[attr-defined]
    f.flush()  # type: ignore[attr-defined]
    h.update(chunk)
