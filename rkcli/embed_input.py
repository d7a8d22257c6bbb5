"""What `rk embed` reads: files, directory trees and stdin, cut into texts (whole files, lines or word chunks).

Everything is a generator, so only one file is in memory at a time (stdin with `--lines` streams).
Each text gets an id that is stable across runs, which is what `--resume` relies on:
`SOURCE` for a whole file, `SOURCE:LINE` with `--lines`, `SOURCE#K` for the K-th chunk.
"""
from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

STDIN = "-"


@dataclass(frozen=True)
class Piece:
    """One text to embed and where it came from."""

    id: str
    source: str
    chunk: int  # 0-based index within its source: the chunk, or the line (blank lines count)
    text: str


@dataclass(frozen=True)
class Split:
    """How a source is cut: whole, one text per line, or `chunk` words overlapping by `overlap`."""

    lines: bool = False
    chunk: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.chunk < 0 or self.overlap < 0 or (self.chunk and self.overlap >= self.chunk):
            raise ValueError("--chunk must be positive and --overlap smaller than --chunk")
        if self.lines and self.chunk:
            raise ValueError("use either --lines or --chunk, not both")


@dataclass
class Skipped:
    """Inputs left out, by reason, for the warning at the end."""

    by_reason: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, source: str) -> None:
        self.by_reason[reason].append(source)


def missing(paths: list[str]) -> list[str]:
    """Paths that do not exist, checked before any work (or truncating an output) is done."""
    return [p for p in paths if p != STDIN and not os.path.exists(p)]


def files(paths: list[str], globs: list[str]) -> Iterator[str]:
    """The files named, and those under the directories named (recursively, sorted, dot-entries left out).

    `globs` filter the files found in directories by name; files named explicitly are always read.
    """
    for p in paths:
        if p == STDIN or not os.path.isdir(p):
            yield p
            continue
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if not name.startswith(".") and (not globs or any(fnmatch.fnmatch(name, g) for g in globs)):
                    yield os.path.join(root, name)


def decode(data: bytes) -> str | None:
    """UTF-8 text, or None for binary (a NUL byte) or undecodable content."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


_WORD = re.compile(r"\S+")


def chunks(text: str, size: int, overlap: int) -> Iterator[str]:
    """Windows of `size` words, each sharing `overlap` words with the previous; original spacing kept."""
    spans = [m.span() for m in _WORD.finditer(text)]
    for start in range(0, max(len(spans) - overlap, 1), size - overlap):
        window = spans[start:start + size]
        if window:
            yield text[window[0][0]:window[-1][1]]


def cut(source: str, text: str, split: Split) -> Iterator[Piece]:
    if split.lines:
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                yield Piece(f"{source}:{i + 1}", source, i, line)
    elif split.chunk:
        for k, part in enumerate(chunks(text, split.chunk, split.overlap)):
            yield Piece(f"{source}#{k}", source, k, part)
    elif text.strip():
        yield Piece(source, source, 0, text)


def _stdin_lines(skipped: Skipped) -> Iterator[Piece]:
    for i, raw in enumerate(sys.stdin.buffer):
        line = decode(raw.rstrip(b"\r\n"))
        if line is None:
            skipped.add("binary or not UTF-8", f"{STDIN}:{i + 1}")
        elif line.strip():
            yield Piece(f"{STDIN}:{i + 1}", STDIN, i, line)


def pieces(paths: list[str], globs: list[str], split: Split, skipped: Skipped) -> Iterator[Piece]:
    """Every text to embed, in input order."""
    for path in files(paths, globs):
        if path == STDIN and split.lines:
            yield from _stdin_lines(skipped)
            continue
        data = sys.stdin.buffer.read() if path == STDIN else Path(path).read_bytes()
        text = decode(data)
        if text is None:
            skipped.add("binary or not UTF-8", path)
        elif not text.strip():
            skipped.add("empty", path)
        else:
            yield from cut(path, text, split)
