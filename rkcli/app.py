"""The `rk` command line. Every command but `serve` is a client of the daemon's line protocol.

Commands live in small modules (chat, embed_cmd, models_cmd) and are registered here. Heavy modules
(the daemon, torch, textual, even rich) are imported inside the commands that use them, so
`rk --help`, `rk ps` and `rk status` start fast on a small board.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from rk import __version__, chat, create_cmd, embed_cmd, models_cmd, pull_cmd
from rk.client import Client, DaemonError, DaemonUnavailable, Endpoint
from rk.cliutil import run_client
from rk.import_cmd import import_model

COMPLETE_VAR = "_RK_COMPLETE"  # the click shell-completion protocol: completions/rk.* call back with it
USE, MODELS, DAEMON = "Chat and embeddings", "Models and queue", "Daemon"

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
    socket: Optional[str] = typer.Option(None, "--socket", envvar="RK_SOCKET", help="Daemon Unix socket (default: per-user "
                                         "runtime dir)."),
    host: Optional[str] = typer.Option(None, "--host", envvar="RK_HOST", help="Daemon on another board, HOST:PORT (TCP)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RK_API_KEY", help="API key for a daemon that requires one."),
) -> None:
    ctx.obj = Endpoint.resolve(socket, host, api_key)


app.command(rich_help_panel=USE)(chat.chat)
app.command(rich_help_panel=USE)(chat.run)
app.command(rich_help_panel=USE)(embed_cmd.embed)
app.command(rich_help_panel=MODELS)(models_cmd.ps)
app.command(rich_help_panel=MODELS, help="The models the daemon can serve (alias: ls).")(models_cmd.models)
app.command("ls", hidden=True)(models_cmd.models)
app.command(rich_help_panel=MODELS)(models_cmd.show)
app.command(rich_help_panel=MODELS)(models_cmd.load)
app.command(rich_help_panel=MODELS)(models_cmd.unload)
app.command(rich_help_panel=DAEMON)(models_cmd.status)
app.command(rich_help_panel=DAEMON)(models_cmd.drain)
app.command(rich_help_panel=DAEMON)(models_cmd.undrain)
app.command(rich_help_panel=MODELS)(pull_cmd.pull)
app.command(rich_help_panel=MODELS)(create_cmd.create)


@app.command(rich_help_panel=DAEMON)
def serve(
    socket: Optional[Path] = typer.Option(None, "--socket", envvar="RK_SOCKET", help="Unix socket to listen on."),
    tcp: Optional[str] = typer.Option(None, "--tcp", envvar="RK_TCP", help="Also listen on TCP [HOST:]PORT (bare port = "
                                      "127.0.0.1), e.g. 11434."),
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", envvar="RK_MODELS", help="Models directory."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RK_API_KEY", help="Require this key on TCP (Authorization: "
                                          "Bearer KEY)."),
    socket_group: Optional[str] = typer.Option(None, "--socket-group", help="Let this group use the socket (0660)."),
    max_queue: Optional[int] = typer.Option(None, "--max-queue", help="Jobs that may wait at once (default 512)."),
    keep_alive: Optional[float] = typer.Option(None, "--keep-alive",
                                               help="Seconds an idle model stays loaded (default 300, <0 forever)."),
    context_length: Optional[int] = typer.Option(None, "--context-length", min=1, help="Context a chat model loads with, tokens, "
                                                 "unless a request or Modelfile sets num_ctx (default 4096)."),
    llama_repack: Optional[str] = typer.Option(None, "--llama-repack", envvar="RK_LLAMA_REPACK", help="llama.cpp weight repack: "
                                               "auto (off on CPUs with AMX, where it crashes), on, off."),
    rkllm_lib: Optional[str] = typer.Option(None, "--rkllm-lib", envvar="RK_RKLLM_LIB", help="Path of librkllmrt.so."),
    rkllm_version: Optional[str] = typer.Option(None, "--rkllm-version", envvar="RK_RKLLM_VERSION", help="Force the RKLLM "
                                                "runtime ABI (1.2 or 1.3) when it cannot be detected."),
    agent_port: Optional[str] = typer.Option(None, "--agent-port", envvar="RK_AGENT_PORT", help="HAProxy agent-check port "
                                             "[HOST:]PORT (bare port = 127.0.0.1): ready up N% / drain / down "
                                             "(docs/multiboard.md)."),
    metrics_public: bool = typer.Option(False, "--metrics-public", envvar="RK_METRICS_PUBLIC", help="Serve /metrics without the "
                                        "API key (for scrapers)."),
    metrics_compat: Optional[str] = typer.Option(None, "--metrics-compat", envvar="RK_METRICS_COMPAT", help="Also emit vLLM's "
                                                 "gauge names: vllm."),
    quiet: bool = typer.Option(False, "--quiet", "-q", envvar="RK_QUIET", help="No access log (one line per request or job)."),
) -> None:
    """Run the daemon: the Unix socket always, TCP when asked. Ollama and OpenAI clients connect here.

    Sharing: RK_CLIENT_MAX_JOBS=N caps one client's jobs (429 + Retry-After beyond it);
    RK_QUEUE_FULL_STATUS=429 answers a full queue 429 instead of 503. Every RK_* setting: docs/multiboard.md, README.
    """
    from rk.daemon.server import run
    from rk.daemon.settings import Settings

    try:
        settings = Settings.from_env(socket=socket, tcp=tcp, models_dir=models_dir, api_key=api_key,
                                     socket_group=socket_group, max_queue=max_queue, keep_alive_s=keep_alive,
                                     context_length=context_length,
                                     llama_repack=llama_repack, rkllm_lib=rkllm_lib, rkllm_version=rkllm_version,
                                     agent_port=agent_port, metrics_public=metrics_public or None,
                                     metrics_compat=metrics_compat, quiet=quiet or None)
    except ValueError as e:  # a flag or RK_* variable that is not a usable value: a usage error, no traceback
        typer.echo(f"rk serve: {e}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings))


@app.command(rich_help_panel=DAEMON)
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
    if COMPLETE_VAR in os.environ:  # a completion script is asking; only then load typer's shell classes
        from typer.completion import completion_init

        completion_init()
    app(prog_name="rk")


@app.command(rich_help_panel=MODELS)
def top(ctx: typer.Context, once: bool = typer.Option(False, "--once", help="Print one snapshot with Rich and exit (for scripts "
                                                      "and bug reports).")) -> None:
    """Live dashboard of the queue, the running job, timings, NPU load and memory (q quits, ? lists keys)."""
    if once:
        from rk.tui.render import print_snapshot

        print_snapshot(run_client(ctx, lambda c: next(c.events(c.send("watch")))))  # the first snapshot
        return
    from rk.tui.app import run_dashboard

    run_dashboard(ctx.obj)



app.command("import", rich_help_panel=MODELS)(import_model)
