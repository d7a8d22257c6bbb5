"""A chat session's state (model, system prompt, history, options) and the slash commands that change it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rk.client import Client, DaemonError

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Session:
    """Everything a turn is sent with. The whole history goes with every turn: the daemon keeps no state."""

    model: str | None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    last_stats: dict[str, Any] | None = None
    think: bool | None = None  # None: the model's default (a thinking model thinks)
    format: str | None = None  # "json": replies are JSON objects

    def request(self, prompt: str) -> dict[str, Any]:
        """The `chat` request for one more user turn."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        req: dict[str, Any] = {"model": self.model, "messages": head + self.messages + [{"role": "user", "content": prompt}],
                               "options": self.options}
        if self.think is not None:
            req["think"] = self.think
        if self.format is not None:
            req["format"] = self.format
        return req

    def record(self, prompt: str, reply: str, stats: dict[str, Any]) -> None:
        self.messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        self.last_stats = stats

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "system": self.system, "options": self.options, "messages": self.messages}

    def load_json(self, data: Any) -> None:
        msgs = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in msgs):
            raise ValueError("not an rk chat transcript: 'messages' must be a list of {role, content}")
        self.messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        self.model = data.get("model") or self.model
        self.system = data.get("system")
        self.options = dict(data.get("options") or {})


@dataclass
class Ctx:
    """What a slash command may touch."""

    session: Session
    client: Client
    console: Console


Command = Callable[[Ctx, str], bool]  # returns False to end the session
COMMANDS: dict[str, tuple[Command, str]] = {}


def command(name: str, usage: str, *aliases: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        for n in (name, *aliases):
            COMMANDS[n] = (fn, usage)
        return fn
    return register


def run_command(ctx: Ctx, line: str) -> bool:
    """Run one `/command arg` line; False means the user asked to leave."""
    name, _, arg = line[1:].partition(" ")
    entry = COMMANDS.get(name.lower())
    if entry is None:
        ctx.console.print(f"unknown command /{name} (/help lists them)", style="yellow")
        return True
    return entry[0](ctx, arg.strip())


@command("help", "/help  these commands", "?")
def _help(ctx: Ctx, arg: str) -> bool:
    usages = dict.fromkeys(usage for _, usage in COMMANDS.values())  # aliases share a line
    ctx.console.print("\n".join(usages) + "\nEnd a line with \\ or wrap text in \"\"\" to write several lines. "
                      "Ctrl-C stops a reply; Ctrl-D or Ctrl-C at the prompt leaves.", style="dim", markup=False)
    return True


@command("model", "/model NAME  switch model, keeping the conversation")
def _model(ctx: Ctx, arg: str) -> bool:
    if not arg:
        ctx.console.print(f"model: {ctx.session.model or 'the daemon default'}")
        return True
    try:
        info = ctx.client.call("show", model=arg)
    except DaemonError as e:
        ctx.console.print(f"{e.code}: {e.message}", style="red", markup=False)
        return True
    if "completion" not in info.get("capabilities", []):
        ctx.console.print(f"{arg} is an embedding model; chat needs a chat model", style="red")
        return True
    ctx.session.model = info.get("name", arg)
    ctx.console.print(f"model: {ctx.session.model}", style="dim")
    return True


@command("system", "/system TEXT  set the system prompt (no text: clear it)")
def _system(ctx: Ctx, arg: str) -> bool:
    ctx.session.system = arg or None
    ctx.console.print("system prompt set" if arg else "system prompt cleared", style="dim")
    return True


@command("think", "/think on|off  let a thinking model reason first, or not (no argument: the model's default)")
def _think(ctx: Ctx, arg: str) -> bool:
    choice = {"on": True, "off": False, "": None}.get(arg.lower(), "?")
    if choice == "?":
        ctx.console.print("usage: /think on|off", style="yellow")
        return True
    ctx.session.think = choice  # type: ignore[assignment]
    ctx.console.print(f"thinking {'model default' if choice is None else arg.lower()}", style="dim")
    return True


@command("clear", "/clear  forget the conversation so far")
def _clear(ctx: Ctx, arg: str) -> bool:
    ctx.session.messages.clear()
    ctx.console.print("conversation cleared", style="dim")
    return True


def _file_arg(ctx: Ctx, arg: str, command_name: str) -> Path | None:
    """The FILE of `/save FILE` and `/load FILE`, or None after printing the usage line."""
    if not arg:
        ctx.console.print(f"usage: /{command_name} FILE", style="yellow")
        return None
    return Path(arg).expanduser()


@command("save", "/save FILE  write the conversation as a JSON transcript")
def _save(ctx: Ctx, arg: str) -> bool:
    import orjson

    if (path := _file_arg(ctx, arg, "save")) is None:
        return True
    try:
        path.write_bytes(orjson.dumps(ctx.session.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as e:
        ctx.console.print(f"cannot write {path}: {e.strerror}", style="red", markup=False)
        return True
    ctx.console.print(f"saved {len(ctx.session.messages)} messages to {path}", style="dim", markup=False)
    return True


@command("load", "/load FILE  continue a saved conversation")
def _load(ctx: Ctx, arg: str) -> bool:
    import orjson

    if (path := _file_arg(ctx, arg, "load")) is None:
        return True
    try:
        ctx.session.load_json(orjson.loads(path.read_bytes()))
    except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
        ctx.console.print(f"cannot load {path}: {getattr(e, 'strerror', None) or e}", style="red", markup=False)
        return True
    ctx.console.print(f"loaded {len(ctx.session.messages)} messages · model {ctx.session.model or 'default'}",
                      style="dim", markup=False)
    return True


@command("stats", "/stats  full figures of the last reply")
def _stats(ctx: Ctx, arg: str) -> bool:
    stats = ctx.session.last_stats
    if not stats:
        ctx.console.print("no reply yet", style="dim")
        return True
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    ctx.console.print(table)
    return True


@command("exit", "/exit  leave (also /bye, Ctrl-D)", "bye", "quit")
def _exit(ctx: Ctx, arg: str) -> bool:
    return False
