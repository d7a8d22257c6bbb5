"""Load: 1,000 concurrent clients on one daemon, mixed line protocol / Ollama / OpenAI, Unix socket / TCP,
chat / embed, against a fast synthetic backend. Every job ends in exactly one `done`; FIFO holds; RSS bounded.

FIFO is checked from the daemon's own view: a `watch` connection receives queue snapshots while the load
runs. Job ids are handed out in arrival order, so in every snapshot the running jobs must be older than
every waiting one and the waiting ones in id order, and the running job ids must never go backwards from
one snapshot to the next (a later job started before an earlier one would break one of these).
"""
from __future__ import annotations

import asyncio
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from daemon_proc import DaemonProc, write_manifest

CLIENTS = 1000
OVERALL_TIMEOUT_S = 120.0
RSS_LIMIT_MB = 500
MSG = [{"role": "user", "content": "alpha beta gamma"}]
HTTP_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ollama-chat": ("/api/chat", {"model": "load:chat", "messages": MSG, "stream": False, "options": {"num_predict": 3}}),
    "ollama-embed": ("/api/embed", {"model": "load:embed", "input": ["one text", "two texts"]}),
    "openai-chat": ("/v1/chat/completions", {"model": "load:chat", "messages": MSG, "max_tokens": 3}),
    "openai-embed": ("/v1/embeddings", {"model": "load:embed", "input": "one text"}),
}


@dataclass
class Outcome:
    """What one client saw."""

    kind: str
    finals: list[str] = field(default_factory=list)  # "done", or an error code / HTTP status
    job: int | None = None
    positions: list[int] = field(default_factory=list)
    to_queued_ms: float | None = None


def ok_http_body(kind: str, body: dict[str, Any]) -> bool:
    if kind.endswith("chat"):
        return body.get("done") is True or bool(body.get("choices"))
    return bool(body.get("embeddings") or body.get("data"))


async def open_conn(d: DaemonProc, tcp: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection; all 1,000 connect at once (the daemon listens with a backlog of 4096)."""
    if tcp:
        return await asyncio.open_connection("127.0.0.1", d.tcp_port, limit=2**22)
    return await asyncio.open_unix_connection(str(d.socket), limit=2**22)


async def line_client(d: DaemonProc, i: int, tcp: bool, go: asyncio.Event, held: list[int]) -> Outcome:
    """One job over the line protocol; records its job id, positions and time to the first `queued`."""
    embed = (i // 4) % 2 == 1
    out = Outcome("line-embed" if embed else "line-chat")
    reader, writer = await open_conn(d, tcp)
    held.append(1)
    await go.wait()
    req = ({"id": f"c{i}", "op": "embed", "model": "load:embed", "input": [f"text {i}"]} if embed else
           {"id": f"c{i}", "op": "chat", "model": "load:chat", "messages": MSG, "options": {"max_tokens": 3}})
    t0 = time.perf_counter()
    writer.write(orjson.dumps(req) + b"\n")
    await writer.drain()
    try:
        while line := await reader.readline():
            ev = orjson.loads(line)
            if ev["ev"] == "queued":
                if out.job is None:
                    out.to_queued_ms = (time.perf_counter() - t0) * 1000
                    out.job = int(ev["job"][1:])
                out.positions.append(ev["position"])
            elif ev["ev"] in ("done", "error"):
                out.finals.append("done" if ev["ev"] == "done" else ev["code"])
                writer.write_eof() if tcp else None
                break  # one final per job; anything after it would be a duplicate the daemon must not send
    finally:
        writer.close()
    return out


async def http_client(d: DaemonProc, i: int, tcp: bool, go: asyncio.Event, held: list[int]) -> Outcome:
    """One job over HTTP/1.1 with Connection: close, written by hand so 1,000 of them cost little."""
    kind = list(HTTP_REQUESTS)[(i // 4) % len(HTTP_REQUESTS)]
    path, body = HTTP_REQUESTS[kind]
    out = Outcome(kind)
    reader, writer = await open_conn(d, tcp)
    held.append(1)
    await go.wait()
    payload = orjson.dumps(body)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    try:
        raw = await reader.read()
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head else "no reply"
    if status == "200" and ok_http_body(kind, orjson.loads(rest)):
        out.finals.append("done")
    elif raw:
        out.finals.append(f"http {status}: {rest[:200]!r}")
    return out


async def watch_fifo(d: DaemonProc, stop: asyncio.Event, violations: list[str]) -> int:
    """Read queue snapshots until told to stop; record every FIFO violation; return how many were read."""
    reader, writer = await open_conn(d, tcp=False)
    writer.write(b'{"id":"w","op":"watch"}\n')
    seen, last_running = 0, 0
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except asyncio.TimeoutError:
                continue
            snap = orjson.loads(line)
            seen += 1
            running = [int(j[1:]) for j in snap["running"]]
            waiting = [int(q["id"][1:]) for q in snap["queue"][len(running):]]
            if waiting != sorted(waiting):
                violations.append(f"waiting jobs out of arrival order: {waiting[:10]}")
            if running and waiting and max(running) > min(waiting):
                violations.append(f"job {max(running)} runs while older job {min(waiting)} waits")
            if running and min(running) < last_running:
                violations.append(f"job {min(running)} started after job {last_running}")
            last_running = max(running, default=last_running)
    finally:
        writer.close()
    return seen


def raise_fd_limit(need: int) -> None:
    """1,000 sockets need more than the usual 1024 descriptors; the daemon inherits this limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2 * CLIENTS + 100, "cannot raise RLIMIT_NOFILE"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def run_load(d: DaemonProc) -> tuple[list[Outcome], int, list[str], int]:
    global _connecting
    _connecting = None  # a semaphore belongs to one event loop
    go, stop = asyncio.Event(), asyncio.Event()
    held: list[int] = []
    violations: list[str] = []
    watcher = asyncio.create_task(watch_fifo(d, stop, violations))
    clients: list[Callable[..., Any]] = [line_client, http_client]
    # client i: protocol i % 2 (line, HTTP), transport (i // 2) % 2 (Unix, TCP), kind from i // 4
    tasks = [asyncio.create_task(clients[i % 2](d, i, (i // 2) % 2 == 1, go, held)) for i in range(CLIENTS)]
    deadline = time.monotonic() + 30
    while len(held) < CLIENTS and time.monotonic() < deadline and not any(t.done() for t in tasks):  # noqa: ASYNC110 - many tasks
        await asyncio.sleep(0.05)
    clients_held = len(held)
    go.set()
    outcomes = await asyncio.gather(*tasks)
    await asyncio.sleep(0.3)  # one more snapshot after the last job
    stop.set()
    snapshots = await watcher
    return list(outcomes), clients_held, violations, snapshots


def test_thousand_concurrent_clients(daemon_factory: Callable[..., DaemonProc], tmp_path: Path) -> None:
    raise_fd_limit(8192)
    models = tmp_path / "models"
    write_manifest(models, "load:chat", backend="synthetic", capabilities=["completion"], context_length=512,
                   params={"tokens_per_s": 20000.0})
    write_manifest(models, "load:embed", backend="synthetic", capabilities=["embedding"], context_length=512, params={"dim": 16})
    d = daemon_factory(tcp=True, models_dir=models, env={"RK_MAX_QUEUE": "2000"})
    t0 = time.monotonic()
    outcomes, held, violations, snapshots = asyncio.run(asyncio.wait_for(run_load(d), OVERALL_TIMEOUT_S))
    elapsed = time.monotonic() - t0
    rss = rss_mb(d.proc.pid)
    with d.client() as c:
        totals = c.call("status")["totals"]

    lost = [o for o in outcomes if not o.finals]
    duplicated = [o for o in outcomes if len(o.finals) > 1]
    failed = [o for o in outcomes if o.finals and o.finals != ["done"]]
    line = [o for o in outcomes if o.kind.startswith("line")]
    to_queued = sorted(o.to_queued_ms for o in line if o.to_queued_ms is not None)
    p50 = statistics.median(to_queued)
    p99 = to_queued[int(len(to_queued) * 0.99) - 1]
    kinds = {k: sum(o.kind == k for o in outcomes) for k in sorted({o.kind for o in outcomes})}
    print(f"\nload: {CLIENTS} clients, held {held} at once, {elapsed:.1f} s; by kind {kinds}")
    print(f"load: jobs lost {len(lost)}, duplicated {len(duplicated)}, failed {len(failed)}; totals {totals}")
    print(f"load: request->queued (line protocol) p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"load: FIFO snapshots {snapshots}, violations {len(violations)}; daemon RSS at end {rss:.1f} MB")

    assert held == CLIENTS
    assert not lost and not duplicated and not failed, (lost[:3], duplicated[:3], failed[:3])
    assert totals["accepted"] == totals["done"] == CLIENTS, totals
    assert not violations, violations[:5]
    assert snapshots >= 3
    job_ids = [o.job for o in line]
    assert len(set(job_ids)) == len(job_ids), "two requests got the same job"
    assert all(o.positions == sorted(o.positions, reverse=True) for o in line), "a job moved back in the queue"
    assert rss < RSS_LIMIT_MB
