"""Model and queue commands: `rk ps`, `rk models` (`rk ls`), `rk show`, `rk load`, `rk unload`, `rk status`.

Each prints a rich table or key/value lines, or with `--json` the daemon's answer without the
protocol envelope (`id`, `ev`). rich is imported inside the commands that draw, to keep start-up fast.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Optional

import typer

from rk.cliutil import model_completer, print_json, run_client

if TYPE_CHECKING:
    from rich.table import Table

JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
MODEL = typer.Argument(..., help="Model name.", autocompletion=model_completer())


def _body(ev: dict[str, Any]) -> dict[str, Any]:
    """An event without its protocol envelope."""
    return {k: v for k, v in ev.items() if k not in ("id", "ev")}


def _mb(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _bytes(n: int | None) -> str:
    return _mb(n / 2**20) if n else "-"


def _duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _until(expires_at: float | None) -> str:
    return "forever" if expires_at is None else f"in {_duration(expires_at - time.time())}"


def _table(columns: Iterable[str], rows: Iterable[Iterable[str]]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    return table



def _grid(rows: Iterable[tuple[str, str]]) -> Table:
    """Key/value lines; empty values are left out, and long ones wrap (a path or a model's facts cut off
    with an ellipsis would hide what the reader came for)."""
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in rows:
        if v:
            table.add_row(f"[bold]{k}[/bold]", v)
    return table


def _print(*renderables: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    for r in renderables:
        console.print(r)


def _progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    done, total, unit = p.get("done", 0), p.get("total"), {"tokens": "tok"}.get(p.get("unit", ""), p.get("unit", ""))
    text = f"{done}/{total} {unit}" if total else f"{done} {unit}"
    if job.get("tokens_per_s"):
        text += f" · {job['tokens_per_s']:.0f}/s"
    return text.strip()


def ps(ctx: typer.Context, json_out: bool = JSON) -> None:
    """The queue (running job first) and the loaded models, like `ollama ps`."""
    snap = run_client(ctx, lambda c: c.call("status"))
    if json_out:
        print_json({"queue": snap.get("queue", []), "loaded": snap.get("loaded", []), "pulls": snap.get("pulls", [])})
        return
    loaded = _table(["MODEL", "MEMORY", "CONTEXT", "UNLOADS"],
                    [(m["name"], _mb(m.get("memory_mb")), str(m.get("num_ctx") or "-"), _until(m.get("expires_at")))
                     for m in snap.get("loaded", [])])
    jobs = _table(["#", "JOB", "KIND", "MODEL", "STATE", "WAITED", "PROGRESS", "FROM", "CLIENT"],
                  [(str(j.get("position", "")), j["id"], j.get("kind", ""), j.get("model", ""), j.get("state", ""),
                    f"{j.get('waited_ms', 0) / 1000:.1f}s", _progress(j), j.get("source", ""), j.get("client_id", ""))
                   for j in snap.get("queue", [])])
    load = snap.get("load") or {}
    wait = f"predicted wait for a new job {load.get('predicted_wait_s', 0):.1f}s"
    wait += " · draining" if load.get("draining") else ""
    _print(loaded if snap.get("loaded") else "no model loaded",
           jobs if snap.get("queue") else "queue empty", f"[dim]{wait}[/dim]")
    if snap.get("pulls"):
        from rk.tui.render import pull_progress

        _print(_table(["PULLING", "STATUS", "PROGRESS", "CLIENTS"],
                      [(p["model"], p.get("status", ""), pull_progress(p.get("completed", 0), p.get("total", 0)),
                        str(p.get("clients", ""))) for p in snap["pulls"]]))


def models(ctx: typer.Context, json_out: bool = JSON) -> None:
    """The models the daemon can serve."""
    found = run_client(ctx, lambda c: c.call("models"))["models"]
    if json_out:
        print_json(found)
        return
    rows = [(m["name"] + (" *" if m.get("default") else ""), ",".join(m.get("capabilities", [])), m.get("backend", ""),
             _bytes(m.get("size")), str(m.get("context_length") or "-"),
             f"loaded ({_mb(m.get('memory_mb'))})" if m.get("loaded") else ("failed" if m.get("failed") else ""))
            for m in found]
    notes = ["[dim]* default model[/dim]"] if any(m.get("default") for m in found) else []
    _print(_table(["NAME", "CAPABILITIES", "BACKEND", "SIZE", "CONTEXT", "STATE"], rows) if rows else "no models", *notes)


def show(ctx: typer.Context, model: str = MODEL, json_out: bool = JSON) -> None:
    """A model's manifest: backend, family, size, context, files, template."""
    info = _body(run_client(ctx, lambda c: c.call("show", model=model)))
    if json_out:
        print_json(info)
        return
    man, details = info.get("manifest", {}), info.get("details", {})
    rows = [("name", info["name"]), ("capabilities", ", ".join(info.get("capabilities", []))),
            ("backend", info.get("backend", "")),
            ("family", details.get("family", "")), ("parameters", details.get("parameter_size", "")),
            ("quantization", details.get("quantization_level", "")), ("size", _bytes(info.get("size"))),
            ("context", str(info.get("context_length", ""))),
            ("loaded", _mb(info.get("memory_mb")) if info.get("loaded") else "no")]
    rows += [(f"file {k}", str(v)) for k, v in (man.get("files") or {}).items()]
    rows += [(k, str(man[k])) for k in ("system", "template") if man.get(k)]
    _print(_grid(rows))


def load(ctx: typer.Context, model: str = MODEL,
         keep_alive: Optional[float] = typer.Option(None, "--keep-alive", help="Seconds to stay loaded when idle (<0 forever)."),
         json_out: bool = JSON) -> None:
    """Load a model now (it waits its turn in the queue), so the first reply does not pay for it."""
    def body(c: Any) -> dict[str, Any]:
        done = c.call("load", model=model, keep_alive=keep_alive)
        loaded = {m["name"]: m for m in c.call("status").get("loaded", [])}
        return {"model": model, "loaded": model in loaded, "memory_mb": loaded.get(model, {}).get("memory_mb"),
                "expires_at": loaded.get(model, {}).get("expires_at"), "stats": done.get("stats", {})}

    result = run_client(ctx, body)
    if json_out:
        print_json(result)
        return
    load_ms = result["stats"].get("load_ms", 0)
    typer.echo(f"loaded {model} · {_mb(result['memory_mb'])} · {load_ms:.0f} ms · unloads {_until(result['expires_at'])}")


def unload(ctx: typer.Context, model: str = MODEL, json_out: bool = JSON) -> None:
    """Unload a model, freeing its (NPU) memory; it waits its turn in the queue."""
    run_client(ctx, lambda c: c.call("unload", model=model))
    if json_out:
        print_json({"model": model, "loaded": False})
        return
    typer.echo(f"unloaded {model}")


def _loaded(m: dict[str, Any]) -> str:
    """A loaded model in `rk status`: memory, the context it was loaded with, and the engine facts its
    backend reports."""
    d = m.get("details") or {}
    facts = [_mb(m.get("memory_mb"))] + ([f"context {m['num_ctx']}"] if m.get("num_ctx") else []) \
        + ([f"{d['threads']} threads"] if d.get("threads") else []) + ([f"repack {d['repack']}"] if d.get("repack") else [])
    return f"{m['name']} ({' · '.join(facts)})"


def status(ctx: typer.Context, json_out: bool = JSON) -> None:
    """The daemon: version, uptime, where it listens, runner, queue, totals, loaded models, NPU."""
    snap = _body(run_client(ctx, lambda c: c.call("status")))
    if json_out:
        print_json(snap)
        return
    totals, runner = snap.get("totals", {}), snap.get("runner", {})
    listen = snap.get("socket", "") + (f" · tcp {snap['tcp']}" if snap.get("tcp") else "") \
        + (f" · agent-check {snap['agent']}" if snap.get("agent") else "")
    load = snap.get("load", {})
    rows = [("daemon", f"rk {snap.get('version', '?')} · pid {snap.get('pid', '?')} · up {_duration(snap.get('uptime_s', 0))}"),
            ("listening", listen),
            ("runner", f"pid {runner.get('pid', '-')} · {_mb(runner.get('rss_mb'))}"),
            ("queue", f"{len(snap.get('running', []))} running · {snap.get('depth', 0)} waiting · "
                      f"predicted wait {load.get('predicted_wait_s', 0):.1f}s" + (" · draining" if load.get("draining") else "")),
            ("totals", " · ".join(f"{k} {v}" for k, v in totals.items()) or "-"),
            ("engine", f"llama.cpp weight repack {snap.get('llama_repack') or '-'}"),
            ("loaded", ", ".join(_loaded(m) for m in snap.get("loaded", [])) or "none")]
    if snap.get("npu"):
        rows.append(("npu", " · ".join(f"{k} {v}" for k, v in snap["npu"].items() if not isinstance(v, (dict, list)))))
    _print(_grid(rows))


def drain(ctx: typer.Context) -> None:
    """Tell balancers to send this daemon no new jobs (its agent-check port answers `drain`); jobs keep running."""
    run_client(ctx, lambda c: c.call("drain"))
    typer.echo("draining: balancers send no new jobs (rk undrain returns)")


def undrain(ctx: typer.Context) -> None:
    """End `rk drain`: balancers may send jobs again."""
    run_client(ctx, lambda c: c.call("undrain"))
    typer.echo("ready: balancers may send jobs again")
