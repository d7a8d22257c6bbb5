"""Write (or check) the shell completion scripts in `completions/`, generated from the Typer app.

    python -m rk.completions            # regenerate completions/rk.{bash,zsh,fish}
    python -m rk.completions --check    # exit 1 when a committed script is stale

Each script is what `_RK_COMPLETE=source_SHELL rk` prints: a thin shim that calls back into `rk`
with `_RK_COMPLETE=complete_SHELL` at every Tab, so the candidates always match the installed
commands and options; only the shim itself can go stale.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

SHELLS = ("bash", "zsh", "fish")


def script(shell: str) -> str:
    """The completion script for `shell`, as the real `rk` entry point prints it."""
    env = dict(os.environ, _RK_COMPLETE=f"source_{shell}")
    out = subprocess.run([sys.executable, "-m", "rk"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() + "\n"  # zsh wants `#compdef` on the first line


def main(
    directory: Path = typer.Argument(Path("completions"), help="Where rk.bash, rk.zsh and rk.fish live."),
    check: bool = typer.Option(False, "--check", help="Only compare; exit 1 if any script differs."),
) -> None:
    stale = []
    for shell in SHELLS:
        path, text = directory / f"rk.{shell}", script(shell)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(str(path))
        if not check:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        typer.echo(("stale: " if check else "wrote: ") + ", ".join(stale), err=check)
    raise typer.Exit(1 if check and stale else 0)


if __name__ == "__main__":
    typer.run(main)
