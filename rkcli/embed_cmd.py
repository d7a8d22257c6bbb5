"""`rk embed`: texts from files, trees and stdin to JSONL embedding records, resumable.

Batches go out on one connection with a few requests in flight, so the daemon always has the next
batch queued while it runs the current one, yet only those few batches are held in memory. Each
record is one write(2) of one whole line, so a killed run leaves only whole records (or a torn last
line, which `--resume` cuts off) and a rerun with `--resume` adds exactly the missing ones.
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import typer

from rk.client import Client, DaemonError
from rk.cliutil import fail, model_completer, run_client, stdout_gone
from rk.embed_input import Piece, Skipped, Split, missing, pieces


def _write_all(fd: int, data: bytes) -> None:
    """One write(2) in practice; the loop only matters if the kernel takes part of the line."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Output:
    """The JSONL destination: stdout or a file; with `resume`, an existing file's ids are kept and skipped."""

    def __init__(self, path: Path | None, resume: bool) -> None:
        self.seen: set[str] = set()
        if path is None:
            self.fd = sys.stdout.fileno()
            return
        if resume and path.exists():
            self.seen = _existing_ids(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if resume else os.O_TRUNC)
        self.fd = os.open(path, flags, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        import orjson

        try:
            _write_all(self.fd, orjson.dumps(record) + b"\n")
        except BrokenPipeError:
            stdout_gone()


def _existing_ids(path: Path) -> set[str]:
    """Ids already in `path`; a torn last line (the run was killed mid-write) is cut off."""
    import orjson

    ids: set[str] = set()
    good_end = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
                ids.add(orjson.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                break
            good_end += len(line)
    if good_end < path.stat().st_size:
        os.truncate(path, good_end)
    return ids


def _batches(items: Iterable[Piece], size: int) -> Iterator[list[Piece]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _default_model(client: Client) -> str:
    """The embedding model the daemon uses when a request names none, so records say which it was."""
    for m in client.call("models")["models"]:
        if "embed" in (m.get("default") or []):
            return str(m["name"])
    return "all-minilm:l6-v2"


def embed_stream(client: Client, todo: Iterable[Piece], model: str, batch: int, in_flight: int,
                 out: Output, include_text: bool, advance: Callable[[int], None]) -> None:
    """Keep `in_flight` embed requests outstanding until `todo` runs out; write records as vectors arrive."""
    groups = _batches(todo, batch)
    pending: dict[str, list[Piece]] = {}

    def submit() -> None:
        group = next(groups, None)
        if group:
            pending[client.send("embed", model=model, input=[p.text for p in group])] = group

    for _ in range(in_flight):
        submit()
    while pending:
        ev = client.read()
        group = pending.get(ev.get("id", ""))
        if group is None:
            continue
        if ev["ev"] == "error":
            raise DaemonError(ev.get("code", "error"), ev.get("message", ""))
        if ev["ev"] == "vectors":
            for i, vec in enumerate(ev["embeddings"]):
                p = group[ev["index"] + i]
                rec = {"id": p.id, "source": p.source, "chunk": p.chunk, "model": model, "dim": ev["dim"], "embedding": vec}
                out.write(rec | {"text": p.text} if include_text else rec)
            advance(len(ev["embeddings"]))
        elif ev["ev"] == "done":
            del pending[ev["id"]]
            submit()


def _fresh(items: Iterable[Piece], seen: set[str]) -> Iterator[Piece]:
    """Pieces not yet written (nor sent in this run): a resumed run and repeated paths add nothing twice."""
    for p in items:
        if p.id not in seen:
            seen.add(p.id)
            yield p


def _warn(skipped: Skipped) -> None:
    for reason, sources in skipped.by_reason.items():
        more = f" (first: {sources[0]})" if len(sources) > 1 else f": {sources[0]}"
        typer.secho(f"rk: warning: skipped {len(sources)} {reason} input{'s' if len(sources) > 1 else ''}{more}",
                    err=True, fg="yellow")


def embed(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., metavar="PATH", help="Files, directories (recursive) or - for stdin."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Embedding model (default: the daemon's, all-minilm:l6-v2).",
                                         autocompletion=model_completer("embedding")),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write JSONL here instead of stdout (needed for --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Append to --output, skipping ids it already holds."),
    glob: list[str] = typer.Option([], "--glob", "-g", help="In directories, only file names matching this pattern (repeatable), "
                                   "e.g. '*.md'."),
    lines: bool = typer.Option(False, "--lines", help="One record per non-blank line (id SOURCE:LINE)."),
    chunk: int = typer.Option(0, "--chunk", help="Split texts into chunks of N words (id SOURCE#K)."),
    overlap: int = typer.Option(0, "--overlap", help="Words shared by consecutive chunks."),
    include_text: bool = typer.Option(False, "--include-text", help="Add each record's text."),
    batch: int = typer.Option(32, "--batch", min=1, help="Texts per request."),
    in_flight: int = typer.Option(3, "--in-flight", min=1, help="Requests kept outstanding on the connection."),
) -> None:
    """Embed texts; write one JSON record per text (id, source, chunk, model, dim, embedding) to stdout."""
    if resume and output is None:
        raise fail("--resume needs --output FILE (it reads what that file already holds)", 2)
    try:
        split = Split(lines=lines, chunk=chunk, overlap=overlap)
    except ValueError as e:
        raise fail(str(e), 2) from None
    if lost := missing(paths):
        raise fail(f"no such file or directory: {', '.join(lost)}", 2)
    skipped = Skipped()

    def body(client: Client) -> None:
        from rk.embed_progress import progress_bar

        out = Output(output, resume)
        name = model or _default_model(client)
        total = None
        if sys.stderr.isatty() and "-" not in paths:  # a second, cheap pass, only for the bar's ETA
            total = sum(1 for p in pieces(paths, glob, split, Skipped()) if p.id not in out.seen)
        with progress_bar(total) as advance:
            embed_stream(client, _fresh(pieces(paths, glob, split, skipped), out.seen), name,
                         batch, in_flight, out, include_text, advance)

    try:
        run_client(ctx, body)
    except OSError as e:
        raise fail(f"{e.filename or ''}: {e.strerror or e}") from None
    if skipped.by_reason:
        _warn(skipped)
