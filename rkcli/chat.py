"""`rk chat` (an interactive session, or one reply when stdin is a pipe) and `rk run` (one prompt)."""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from rk.chat_session import Ctx, Session, run_command
from rk.client import Client, DaemonError
from rk.cliutil import fail, model_completer, run_client
from rk.reply import ReplyView, stats_line, stream

if TYPE_CHECKING:
    from rich.console import Console

PROMPT, MORE, FENCE = ">>> ", "... ", '"""'

MAX_TOKENS = typer.Option(None, "--max-tokens", "-n", help="Stop a reply after this many tokens.")
TEMPERATURE = typer.Option(None, "--temperature", "-t", help="Sampling temperature; 0 = greedy.")
SEED = typer.Option(None, "--seed", help="Sampling seed, for repeatable replies.")
THINK = typer.Option(None, "--think/--no-think", help="Let a thinking model reason before it answers, or not "
                     "(default: the model's own; /think on|off switches it in a session).")
FORMAT = typer.Option(None, "--format", help="Structured replies: 'json' for a JSON object.")


def _format(value: str | None) -> str | None:
    if value not in (None, "json"):
        raise fail("--format takes 'json'")
    return value


def _options(max_tokens: int | None, temperature: float | None, seed: int | None) -> dict[str, Any]:
    given = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    return {k: v for k, v in given.items() if v is not None}


def history_path() -> Path:
    """Input history shared by all sessions: `$XDG_STATE_HOME/rk/history` (~/.local/state/rk/history)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "rk" / "history"


def _enable_history() -> None:
    """Line editing and up-arrow history through readline, saved when the session ends."""
    try:
        import readline
    except ImportError:  # readline is missing on some minimal Pythons; input() still works
        return
    path = history_path()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(2000)

    def save() -> None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    atexit.register(save)


def read_prompt() -> str:
    """One prompt: a line, lines joined while they end in `\\`, or a block between triple quotes."""
    first = input(PROMPT)
    if first.lstrip().startswith(FENCE):
        text = first.lstrip()[len(FENCE):]
        while FENCE not in text:
            text += "\n" + input(MORE)
        return text[:text.index(FENCE)].strip("\n")
    lines = [first]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(input(MORE))
    return "\n".join(lines)


def _turn(ctx: Ctx, prompt: str, markdown: bool) -> None:
    """Send one user turn with the whole history; record it unless it was cancelled or failed."""
    console = ctx.console
    try:
        reply = stream(ctx.client, ReplyView(console, markdown), **ctx.session.request(prompt))
    except DaemonError as e:
        console.print(f"{e.code}: {e.message}", style="red", markup=False)
        return
    if reply.stats is None:
        console.print("cancelled", style="dim")
        return
    ctx.session.record(prompt, reply.text, reply.stats)
    console.print(stats_line(reply.stats), style="dim", highlight=False)


def interactive(client: Client, session: Session, console: Console, markdown: bool) -> None:
    """The read-reply loop, until /exit, Ctrl-D, or Ctrl-C at the prompt."""
    _enable_history()
    ctx = Ctx(session, client, console)
    console.print(f"rk chat · {session.model or 'default model'} · /help for commands, Ctrl-D to leave",
                  style="dim", markup=False, highlight=False)
    while True:
        try:
            prompt = read_prompt()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if prompt.startswith("/"):
            if not run_command(ctx, prompt.strip()):
                return
        elif prompt.strip():
            _turn(ctx, prompt, markdown)


def answer_once(client: Client, session: Session, prompt: str) -> None:
    """One reply as plain text on stdout, for scripts and pipes; stats on stderr when that is a terminal."""
    from rich.console import Console

    reply = stream(client, ReplyView(Console(highlight=False), markdown=False), **session.request(prompt))
    if reply.stats is None:
        raise fail("cancelled", 130)
    if sys.stderr.isatty():
        Console(stderr=True, highlight=False).print(stats_line(reply.stats), style="dim")


def chat(
    ctx: typer.Context,
    model: Optional[str] = typer.Argument(None, help="Chat model (default: the daemon's, smollm2:135m).",
                                         autocompletion=model_completer("completion")),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="System prompt."),
    raw: bool = typer.Option(False, "--raw", help="Print replies as plain text instead of rendering Markdown."),
    max_tokens: Optional[int] = MAX_TOKENS,
    temperature: Optional[float] = TEMPERATURE,
    seed: Optional[int] = SEED,
    think: Optional[bool] = THINK,
    format: Optional[str] = FORMAT,
) -> None:
    """Talk to a model. With stdin from a pipe or file, send it as one prompt, print the reply and exit."""
    session = Session(model=model, system=system, options=_options(max_tokens, temperature, seed), think=think,
                      format=_format(format))
    if not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise fail("no prompt on stdin")
        run_client(ctx, lambda c: answer_once(c, session, prompt))
        return
    from rich.console import Console

    console = Console(highlight=False)
    run_client(ctx, lambda c: interactive(c, session, console, markdown=not raw and console.is_terminal))


def run(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name, e.g. smollm2:135m.", autocompletion=model_completer("completion")),
    prompt: Optional[str] = typer.Argument(None, help="The prompt; read from stdin when omitted."),
    max_tokens: Optional[int] = MAX_TOKENS,
    temperature: Optional[float] = TEMPERATURE,
    seed: Optional[int] = SEED,
) -> None:
    """Send one prompt and stream the reply to stdout as plain text."""
    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        raise fail("no prompt given")
    session = Session(model=model, options=_options(max_tokens, temperature, seed))
    run_client(ctx, lambda c: answer_once(c, session, text))
