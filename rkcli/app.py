"""The `rk` command line. Every command but `serve` is a client of the daemon's line protocol.

Heavy modules (the daemon, torch, textual) are imported inside the commands that use them, so
`rk --help` and `rk ps` start fast on a small board.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from rk import __version__
from rk.client import Client, DaemonError, DaemonUnavailable, Endpoint

app = typer.Typer(
    name="rk",
    help="Local LLM service for Rockchip NPU boards (and any CPU): one daemon, one FIFO queue, Ollama and OpenAI APIs.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    socket: Optional[str] = typer.Option(None, "--socket", envvar="RK_SOCKET", help="Daemon Unix socket (default: per-user runtime dir)."),
    host: Optional[str] = typer.Option(None, "--host", envvar="RK_HOST", help="Daemon on another board, HOST:PORT (TCP)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RK_API_KEY", help="API key for a daemon that requires one."),
) -> None:
    ctx.obj = Endpoint.resolve(socket, host, api_key)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"rk: {message}", err=True)
    return typer.Exit(code)


def connect(ctx: typer.Context, timeout: float | None = 5.0) -> Client:
    try:
        return Client(ctx.obj, timeout)
    except DaemonUnavailable as e:
        raise fail(str(e)) from None


def run_client(ctx: typer.Context, body: Any) -> Any:
    """Run `body(client)` and turn daemon errors and lost connections into one clear line."""
    try:
        with connect(ctx) as client:
            return body(client)
    except DaemonError as e:
        raise fail(f"{e.code}: {e.message}") from None
    except DaemonUnavailable as e:
        raise fail(str(e)) from None
    except BrokenPipeError:
        raise typer.Exit(0) from None


@app.command()
def serve(
    socket: Optional[Path] = typer.Option(None, "--socket", envvar="RK_SOCKET", help="Unix socket to listen on."),
    tcp: Optional[str] = typer.Option(None, "--tcp", envvar="RK_TCP", help="Also listen on TCP [HOST:]PORT (bare port = 127.0.0.1), e.g. 11434."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", envvar="RK_MODELS", help="Models directory."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RK_API_KEY", help="Require this key on TCP (Authorization: Bearer KEY)."),
    socket_group: Optional[str] = typer.Option(None, "--socket-group", help="Let this group use the socket (0660)."),
    max_queue: Optional[int] = typer.Option(None, "--max-queue", help="Jobs that may wait at once (default 512)."),
    keep_alive: Optional[float] = typer.Option(None, "--keep-alive", help="Seconds an idle model stays loaded (default 300, <0 forever)."),
    rkllm_lib: Optional[str] = typer.Option(None, "--rkllm-lib", envvar="RK_RKLLM_LIB", help="Path of librkllmrt.so."),
) -> None:
    """Run the daemon: the Unix socket always, TCP when asked. Ollama and OpenAI clients connect here."""
    from rk.daemon.server import run
    from rk.daemon.settings import Settings

    settings = Settings.from_env(socket=socket, tcp=tcp, models_dir=models_dir, api_key=api_key,
                                 socket_group=socket_group, max_queue=max_queue, keep_alive_s=keep_alive,
                                 rkllm_lib=rkllm_lib)
    raise typer.Exit(run(settings))


def _stats_line(stats: dict[str, Any]) -> str:
    gen_ms, gen_tok = stats.get("generate_ms", 0.0), stats.get("generate_tokens", 0)
    tps = f"{gen_tok / (gen_ms / 1000):.1f} tok/s" if gen_ms else "-"
    return (f"wait {stats.get('wait_ms', 0):.0f} ms · prefill {stats.get('prefill_ms', 0):.0f} ms "
            f"({stats.get('prefill_tokens', 0)} tok) · generate {gen_tok} tok at {tps} · "
            f"{stats.get('memory_mb', 0):.0f} MB")


@app.command()
def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name, e.g. smollm2:135m."),
    prompt: Optional[str] = typer.Argument(None, help="The prompt; read from stdin when omitted."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", "-n", help="Stop after this many tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="0 = greedy."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed, for repeatable output."),
) -> None:
    """Send one prompt, stream the reply to stdout, then print a stats line on stderr."""
    text = prompt if prompt is not None else sys.stdin.read()
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}.items() if v is not None}

    def body(client: Client) -> None:
        rid = client.send("chat", model=model, messages=[{"role": "user", "content": text}], options=options)
        for ev in client.events(rid):
            if ev["ev"] == "token":
                sys.stdout.write(ev["text"])
                sys.stdout.flush()
            elif ev["ev"] == "done":
                sys.stdout.write("\n")
                typer.secho(_stats_line(ev["stats"]), err=True, dim=True)

    run_client(ctx, body)


@app.command()
def embed(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Embedding model (default all-minilm:l6-v2)."),
    batch: int = typer.Option(64, "--batch", help="Texts per request."),
) -> None:
    """Embed each line of stdin; write one JSON record per line to stdout."""
    import orjson

    def body(client: Client) -> None:
        lines = [ln.rstrip("\n") for ln in sys.stdin if ln.strip()]
        for start in range(0, len(lines), batch):
            chunk = lines[start:start + batch]
            rid = client.send("embed", model=model, input=chunk)
            for ev in client.events(rid):
                if ev["ev"] == "vectors":
                    for i, vec in enumerate(ev["embeddings"]):
                        n = start + ev["index"] + i
                        sys.stdout.buffer.write(orjson.dumps({"id": n, "text": lines[n], "dim": ev["dim"], "embedding": vec}) + b"\n")
        sys.stdout.flush()

    run_client(ctx, body)


@app.command()
def status(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print the raw snapshot.")) -> None:
    """The daemon's queue, loaded models and totals."""
    import orjson

    snap = run_client(ctx, lambda c: c.call("status"))
    snap.pop("id", None)
    snap.pop("ev", None)
    if json_out:
        typer.echo(orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode())
        return
    t = snap.get("totals", {})
    typer.echo(f"rk {snap.get('version')} · up {snap.get('uptime_s', 0):.0f} s · {snap.get('socket')}")
    typer.echo(f"queue: {len(snap.get('queue', []))} job(s) · done {t.get('done', 0)} · cancelled {t.get('cancelled', 0)} · errors {t.get('errors', 0)}")
    for m in snap.get("loaded", []):
        typer.echo(f"loaded: {m['name']} ({m['memory_mb']:.0f} MB)")


@app.command()
def version(ctx: typer.Context) -> None:
    """The CLI's version and, when one answers, the daemon's."""
    typer.echo(f"rk {__version__}")
    try:
        with Client(ctx.obj) as c:
            v = c.call("version")
        typer.echo(f"daemon {v['version']} (protocol {v['protocol']}) at {ctx.obj.describe()}")
    except (DaemonUnavailable, DaemonError) as e:
        typer.echo(f"daemon: not reachable ({e})", err=True)


def main() -> None:
    app()


@app.command()
def top(ctx: typer.Context, once: bool = typer.Option(False, "--once", help="Print one snapshot with Rich and exit (for scripts and bug reports).")) -> None:
    """Live dashboard of the queue, the running job, timings, NPU load and memory (q quits, ? lists keys)."""
    if once:
        from rk.tui.render import print_snapshot

        print_snapshot(run_client(ctx, lambda c: c.call("watch")))
        return
    from rk.tui.app import run_dashboard

    run_dashboard(ctx.obj)
