"""What every client command shares: one clear line instead of a traceback, and quiet exits into `head`."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, TypeVar

import typer

from rk.client import Client, DaemonError, DaemonUnavailable, Endpoint

T = TypeVar("T")

# 128 + SIGPIPE: what a C tool reports when its reader (`head`) goes away.
EXIT_PIPE = 141


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `rk: message` on stderr and return the Exit to raise."""
    typer.echo(f"rk: {message}", err=True)
    return typer.Exit(code)


def connect(ctx: typer.Context, timeout: float | None = 5.0) -> Client:
    try:
        return Client(ctx.obj, timeout)
    except DaemonUnavailable as e:
        raise fail(str(e)) from None


def stdout_gone() -> NoReturn:
    """stdout's reader left: point fd 1 at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(EXIT_PIPE)


def run_client(ctx: typer.Context, body: Callable[[Client], T]) -> T:
    """Run `body(client)` and turn daemon errors, lost connections and a closed stdout into one clear line."""
    try:
        with connect(ctx) as client:
            return body(client)
    except DaemonError as e:
        raise fail(f"{e.code}: {e.message}") from None
    except DaemonUnavailable as e:
        raise fail(str(e)) from None
    except BrokenPipeError:
        stdout_gone()
    except KeyboardInterrupt:  # closing the connection cancels whatever this client still had queued
        raise fail("interrupted", 130) from None


def print_json(obj: Any) -> None:
    """Indented JSON on stdout, for `--json`."""
    import orjson

    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    sys.stdout.flush()


def model_completer(capability: str | None = None) -> Callable[[typer.Context, str], list[str]]:
    """Tab completion of model names (with one capability), asked from the daemon; nothing when none answers."""
    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        opts = ctx.find_root().params
        try:
            with Client(Endpoint.resolve(opts.get("socket"), opts.get("host"), opts.get("api_key")), 1.0) as c:
                found = c.call("models")["models"]
        except (OSError, DaemonError):
            return []
        return [m["name"] for m in found
                if m["name"].startswith(incomplete) and (capability is None or capability in m.get("capabilities", []))]
    return complete
