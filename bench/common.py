"""What every benchmark shares: result rows, percentiles, the table, timing and process helpers.

Benchmarks start real daemons with the test helpers in `tests/daemon_proc.py` (imported by path,
so nothing is copied), and keep converted model weights in `bench/.models` across runs.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MODELS = BENCH / ".models"  # persistent model store for bench daemons (the bundled models need nothing in it)
sys.path.insert(0, str(REPO / "tests"))

from daemon_proc import DaemonProc, end_process, free_port, start_daemon, write_manifest  # noqa: E402

__all__ = ["DaemonProc", "free_port", "start_daemon", "write_manifest"]



@dataclass
class Row:
    """One figure of the table: rk's value, the baseline's, and rk ÷ baseline (or as `ratio` says)."""

    bench: str
    metric: str
    value: float
    baseline: float | None = None
    unit: str = ""
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline


@dataclass
class Context:
    """Per-run settings and a scratch directory; `extra` collects raw figures for the JSON file."""

    quick: bool
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by linear interpolation (p in 0..100)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max / n, for the JSON file."""
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values, default=math.nan), "n": len(values)}


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall milliseconds of `repeat` calls of `fn`."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def table(rows: list[Row]) -> str:
    """A plain-text table that pastes into Markdown as-is."""
    head = ["bench", "metric", "rk", "baseline", "ratio", "target", "unit / baseline"]
    body = [[r.bench, r.metric, fmt(r.value), fmt(r.baseline), fmt(r.ratio), r.target,
             " · ".join(x for x in (r.unit, r.baseline_name, r.note) if x)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body])


def daemon_env() -> dict[str, str]:
    """Environment for bench daemons: long keep-alive so a model never unloads mid-measurement."""
    return {"RK_KEEP_ALIVE": "-1"}


@contextlib.contextmanager
def daemon(tmp: Path, *, models_dir: Path, bundled: bool, env: dict[str, str] | None = None,
           tcp: bool = True) -> Iterator[DaemonProc]:
    """A real `rk serve` for the duration of a `with` block."""
    d = start_daemon(tmp, models_dir=models_dir, tcp=tcp, bundled=bundled, env=daemon_env() | (env or {}), wait=120)
    try:
        yield d
    finally:
        d.stop()


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process, plus its descendants (the daemon's runner) when asked."""
    p = psutil.Process(pid)
    procs = [p] + (p.children(recursive=True) if children else [])
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total / 2**20


def wait_connectable(path: Path | None = None, port: int | None = None, proc: subprocess.Popen[bytes] | None = None,
                     timeout: float = 120.0, interval: float = 0.002) -> None:
    """Poll until a Unix socket or loopback port accepts a connection (same method for rk and baselines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready")
        fam = socket.AF_UNIX if path is not None else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path) if path is not None else ("127.0.0.1", port))
                return
            except OSError:
                time.sleep(interval)
    raise TimeoutError("not ready in time")


@contextlib.contextmanager
def baseline_app(tmp: Path, *, uds: Path | None = None, port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The FastAPI + uvicorn baseline (bench/baseline_app.py) on a Unix socket or a loopback port."""
    where = ["--uds", str(uds)] if uds is not None else ["--host", "127.0.0.1", "--port", str(port)]
    log = open(tmp / f"baseline-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--log-level", "warning",
                             "--no-access-log", *where], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_connectable(uds, port, proc)
        yield proc
    finally:
        end_process(proc, timeout=10)
        log.close()


def rk_env(d: DaemonProc) -> dict[str, str]:
    """Environment for an `rk` CLI subprocess talking to daemon `d`."""
    env = dict(os.environ)
    env.pop("RK_HOST", None)
    env["RK_SOCKET"] = str(d.socket)
    return env


STREAM_RATE = 2000.0  # tokens/s of the synthetic backend in the streaming benchmark (the figure)


def synthetic_bench_models(models_dir: Path) -> None:
    """Synthetic chat models for benchmarks: paced at STREAM_RATE, unthrottled, and a one-token replier."""
    write_manifest(models_dir, "bench:stream", backend="synthetic", capabilities=["completion"], context_length=8192,
                   params={"tokens_per_s": STREAM_RATE, "reply_tokens": 1_000_000})
    write_manifest(models_dir, "bench:ceiling", backend="synthetic", capabilities=["completion"], context_length=8192,
                   params={"tokens_per_s": 1e12, "reply_tokens": 1_000_000})
    write_manifest(models_dir, "bench:tiny", backend="synthetic", capabilities=["completion"], context_length=8192,
                   params={"tokens_per_s": 1e12})


@contextlib.contextmanager
def synthetic_daemon(ctx: Context, name: str, env: dict[str, str] | None = None) -> Iterator[DaemonProc]:
    """A daemon with only the synthetic bench models (no torch in its runner)."""
    models = ctx.tmp / name / "models"
    synthetic_bench_models(models)
    with daemon(ctx.tmp / name, models_dir=models, bundled=False, env=env) as d:
        yield d


def chat_line(model: str, content: str, max_tokens: int) -> dict[str, Any]:
    """A line-protocol chat request body (without id/op)."""
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "options": {"max_tokens": max_tokens, "temperature": 0}}


def openai_chat(model: str, content: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client over one socket, for round trips whose client cost is near zero.

    (httpx adds about a millisecond of its own per request here, which would hide the server's cost.)
    It handles only what the benchmarks get back: Content-Length bodies.
    """

    def __init__(self, uds: Path | None = None, port: int | None = None) -> None:
        if uds is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(uds))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + (body or b""))
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:]) if k.lower() == b"content-length")
        while len(self.buf) < length:
            self._fill()
        out, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), out

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk


def rk_cmd() -> list[str]:
    """The installed `rk` console script next to this Python (what users run), else `python -m rk`."""
    script = Path(sys.executable).parent / "rk"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rk"]


def torch_threads() -> int:
    """Threads for in-process torch baselines: the same rule as the daemon's runner (RK_THREADS, 0 = all cores)."""
    return int(os.environ.get("RK_THREADS") or 0) or os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads for in-process llama.cpp baselines: the llamacpp backend's rule (RK_THREADS, else the physical big cores)."""
    from rk.daemon.backends.cputhreads import choose_threads

    return int(os.environ.get("RK_THREADS") or 0) or choose_threads()
