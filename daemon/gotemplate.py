"""A Modelfile `TEMPLATE` as Ollama writes it (Go text/template), rendered through Jinja2.

No maintained Go-template renderer exists for Python, so the subset Ollama's library templates use is
translated to Jinja once: `{{ .Field }}`, `$`, `$var` (`:=` and `=`), `if`/`else if`/`else`, `range`
(with `$i, $v :=` and `else`), `with`, `{{-`/`-}}` trimming, comments, and the functions `and`, `or`,
`not`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `len`, `slice`, `index`, `json`. Anything else is refused
when the model is created, never skipped. A template already written in Jinja (`{%`) is taken as is,
with the names Hugging Face chat templates use (`messages`, `tools`, `add_generation_prompt`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rk.daemon.errors import RkError
from rk.daemon.jobs import Message, Tool

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<num>-?\d+)|(?P<open>\()|(?P<close>\))'
                    r"|(?P<field>(?:\$[A-Za-z_]\w*|\$)?(?:\.[A-Za-z_]\w*)+|\.)|(?P<var>\$[A-Za-z_]\w*|\$)"
                    r"|(?P<word>[A-Za-z_]\w*)|(?P<pipe>\|))")
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_RESPONSE = re.compile(r"\{\{-?\s*\.Response\s*-?\}\}")
_ENV = ImmutableSandboxedEnvironment(keep_trailing_newline=True)


def _bad(why: str) -> RkError:
    return RkError("bad_request", f"TEMPLATE: {why}; rk renders Go templates in the subset Ollama's library "
                   "uses (fields, variables, if/range/with, and, or, not, eq, ne, lt, le, gt, ge, len, slice, "
                   "index, json) or a Jinja template as is", param="template")


def is_jinja(source: str) -> bool:
    return "{%" in source or "{#" in source


class GoObj(dict[str, Any]):
    """A Go value with fields (`.Function.Name`) that prints as JSON, as Ollama's API types do."""

    def __init__(self, fields: dict[str, Any], data: Any) -> None:
        super().__init__(fields)
        self.data = data

    def __str__(self) -> str:
        return json.dumps(self.data, ensure_ascii=False)


def _api(v: Any) -> Any:
    """A value in its API shape: GoObjs (also inside lists) as their data."""
    return v.data if isinstance(v, GoObj) else [_api(x) for x in v] if isinstance(v, list) else v


def _gojson(v: Any) -> str:
    """Go's `json` function: a value as JSON, in the API's shape (`{{ json .Tools }}`)."""
    return json.dumps(_api(v), ensure_ascii=False)


_ENV.filters["gojson"] = _gojson


@dataclass
class _Block:
    kind: str  # if, range, with
    dot: str  # the dot outside the block, restored at its end (and at a with's else)


class _Translator:
    def __init__(self) -> None:
        self.dot = "_root"
        self.blocks: list[_Block] = []
        self.n = 0
        self.out: list[str] = []

    def run(self, source: str, close_open: bool) -> str:
        pos = 0
        for m in _ACTION.finditer(source):
            self._text(source[pos:m.start()])
            pos = m.end()
            lt, rt = ("-" if m.group(1) else ""), ("-" if m.group(3) else "")
            self._action(m.group(2), lt, rt)
        self._text(source[pos:])
        if self.blocks and not close_open:
            raise _bad(f"{len(self.blocks)} block(s) not closed with {{{{ end }}}}")
        while self.blocks:
            self._end("", "")
        return "".join(self.out)

    def _text(self, text: str) -> None:
        if text:
            self.out.append("{% raw %}" + text + "{% endraw %}" if any(t in text for t in ("{{", "{%", "{#")) else text)

    def _tag(self, body: str, lt: str, rt: str) -> None:
        self.out.append("{%" + lt + " " + body + " " + rt + "%}")

    def _action(self, body: str, lt: str, rt: str) -> None:
        if body.startswith("/*"):
            self._tag("if false", lt, "")
            self._tag("endif", "", rt)
            return
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word):].strip()
        if word == "if":
            self.blocks.append(_Block("if", self.dot))
            self._tag(f"if {self._pipeline(rest)}", lt, rt)
        elif word == "else":
            self._else(rest, lt, rt)
        elif word == "end":
            self._end(lt, rt)
        elif word == "range":
            self._range(rest, lt, rt)
        elif word == "with":
            self.n += 1
            name = f"_w{self.n}"
            self._tag(f"set {name} = {self._pipeline(rest)}", lt, "")
            self.blocks.append(_Block("with", self.dot))
            self._tag(f"if {name}", "", rt)
            self.dot = name
        elif word in ("define", "template", "block", "break", "continue"):
            raise _bad(f"{{{{ {word} }}}} is not supported")
        elif (m := re.fullmatch(r"(\$\w+)\s*:?=\s*(.+)", body, re.DOTALL)) is not None:
            self._tag(f"set _v.{m.group(1)[1:]} = {self._pipeline(m.group(2))}", lt, rt)
        else:
            self.out.append("{{" + lt + " " + self._pipeline(body) + " " + rt + "}}")

    def _else(self, rest: str, lt: str, rt: str) -> None:
        if not self.blocks:
            raise _bad("{{ else }} outside a block")
        block = self.blocks[-1]
        if rest.startswith("if "):
            if block.kind != "if":
                raise _bad("{{ else if }} after a range or with")
            self._tag(f"elif {self._pipeline(rest[3:].strip())}", lt, rt)
            return
        if rest:
            raise _bad(f"{{{{ else {rest} }}}} is not supported")
        self.dot = block.dot  # the else of a range or with sees the outer dot
        self._tag("else", lt, rt)

    def _end(self, lt: str, rt: str) -> None:
        if not self.blocks:
            raise _bad("{{ end }} without a block")
        block = self.blocks.pop()
        self.dot = block.dot
        self._tag("endfor" if block.kind == "range" else "endif", lt, rt)

    def _range(self, rest: str, lt: str, rt: str) -> None:
        m = re.fullmatch(r"(?:(\$\w+)\s*(?:,\s*(\$\w+))?\s*:=\s*)?(.+)", rest, re.DOTALL)
        assert m is not None
        first, second, expr = m.groups()
        self.n += 1
        item = f"_d{self.n}"
        self.blocks.append(_Block("range", self.dot))
        tags = [f"for {item} in {self._pipeline(expr)}"]
        if second:  # $i, $v
            tags += [f"set _v.{first[1:]} = loop.index0", f"set _v.{second[1:]} = {item}"]
        elif first:  # $v
            tags.append(f"set _v.{first[1:]} = {item}")
        for n, tag in enumerate(tags):  # the trim markers go to the first and last tag
            self._tag(tag, lt if n == 0 else "", rt if n == len(tags) - 1 else "")
        self.dot = item

    # ---- expressions ---------------------------------------------------------------------------

    def _pipeline(self, text: str) -> str:
        tokens = self._tokens(text)
        expr, i = self._command(tokens, 0)
        while i < len(tokens) and tokens[i] == ("pipe", "|"):
            fn, j = tokens[i + 1] if i + 1 < len(tokens) else ("", ""), i + 2
            if fn[0] != "word":
                raise _bad(f"bad pipeline {text!r}")
            args, j = self._args(tokens, j)
            expr = self._call(fn[1], [*args, expr])
            i = j
        if i != len(tokens):
            raise _bad(f"cannot read {text!r}")
        return expr

    @staticmethod
    def _tokens(text: str) -> list[tuple[str, str]]:
        out, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise _bad(f"cannot read {text[pos:pos + 30]!r}")
            kind = m.lastgroup or ""
            out.append((kind, m.group(kind)))
            pos = m.end()
        return out

    def _command(self, tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
        if i >= len(tokens):
            raise _bad("an empty action")
        kind, value = tokens[i]
        if kind == "word" and value not in ("true", "false", "nil"):
            args, j = self._args(tokens, i + 1)
            return self._call(value, args), j
        return self._operand(tokens, i)

    def _args(self, tokens: list[tuple[str, str]], i: int) -> tuple[list[str], int]:
        args = []
        while i < len(tokens) and tokens[i][0] not in ("close", "pipe"):
            a, i = self._operand(tokens, i)
            args.append(a)
        return args, i

    def _operand(self, tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
        kind, value = tokens[i]
        if kind == "open":
            inner, j = self._command(tokens, i + 1)
            while j < len(tokens) and tokens[j][0] == "pipe":
                fn = tokens[j + 1][1]
                args, j = self._args(tokens, j + 2)
                inner = self._call(fn, [*args, inner])
            if j >= len(tokens) or tokens[j][0] != "close":
                raise _bad("unbalanced parentheses")
            return f"({inner})", j + 1
        if kind == "str":
            return (json.dumps(value[1:-1]) if value[0] == "`" else value), i + 1
        if kind == "num":
            return value, i + 1
        if kind == "word":
            return {"true": "true", "false": "false", "nil": "none"}[value], i + 1
        if kind in ("field", "var"):
            return self._field(value), i + 1
        raise _bad(f"unexpected {value!r}")

    def _field(self, path: str) -> str:
        if path == ".":
            return self.dot
        if path == "$":
            return "_root"
        head, _, fields = path.partition(".") if not path.startswith(".") else ("", "", path[1:])
        base = self.dot if not head else "_root" if head == "$" else f"_v.{head[1:]}"
        return base + "".join(f"[{json.dumps(f)}]" for f in fields.split(".") if f)

    @staticmethod
    def _call(fn: str, args: list[str]) -> str:
        if fn in _COMPARE:
            if len(args) < 2:
                raise _bad(f"{fn} needs two arguments")
            op = _COMPARE[fn]
            if fn == "eq" and len(args) > 2:
                return "(" + " or ".join(f"{args[0]} == {b}" for b in args[1:]) + ")"
            return f"({args[0]} {op} {args[1]})"
        if fn in ("and", "or") and args:
            return "(" + f" {fn} ".join(args) + ")"
        if fn == "not" and len(args) == 1:
            return f"(not {args[0]})"
        if fn == "len" and len(args) == 1:
            return f"({args[0]}|length)"
        if fn == "json" and len(args) == 1:
            return f"({args[0]}|gojson)"
        if fn == "index" and len(args) >= 2:
            return args[0] + "".join(f"[{a}]" for a in args[1:])
        if fn == "slice" and 1 <= len(args) <= 3:
            return f"{args[0]}[{args[1] if len(args) > 1 else ''}:{args[2] if len(args) > 2 else ''}]"
        raise _bad(f"the function {fn!r} (with {len(args)} arguments) is not supported")


def translate(source: str, close_open: bool = False) -> str:
    """The Jinja source of a Go template; `close_open` ends blocks a cut template left open."""
    return "{% set _v = namespace() %}" + _Translator().run(source, close_open)


@lru_cache(maxsize=16)
def _compiled(source: str, close_open: bool = False) -> Any:
    text = source if is_jinja(source) else translate(source, close_open)
    try:
        return _ENV.from_string(text)
    except TemplateSyntaxError as e:
        raise _bad(f"{e.message} (line {e.lineno})") from None


def check(source: str) -> None:
    """Refuse a template rk cannot render, when the model is created (the 400 names what is wrong)."""
    _compiled(source)
    if not is_jinja(source) and "Messages" not in source:
        _compiled(_RESPONSE.split(source, 1)[0], True)


def _tool(t: Tool) -> GoObj:
    fn = {"name": t.name, "description": t.description, "parameters": t.parameters}
    return GoObj({"Type": "function", "Function": GoObj({"Name": t.name, "Description": t.description,
                                                         "Parameters": t.parameters}, fn)},
                 {"type": "function", "function": fn})


def _message(m: Message) -> GoObj:
    calls = [GoObj({"Function": GoObj({"Name": c.name, "Arguments": GoObj({}, c.arguments)}, fn)}, {"function": fn})
             for c in m.tool_calls for fn in [{"name": c.name, "arguments": c.arguments}]]
    return GoObj({"Role": m.role, "Content": m.content, "ToolCalls": calls, "Thinking": m.thinking or "",
                  "ToolName": m.tool_name or ""}, m.template_dict())


def render(source: str, messages: list[Message], tools: tuple[Tool, ...], think: bool | None) -> str:
    """The prompt a Modelfile TEMPLATE makes of a conversation, ending where the reply begins."""
    try:
        return _render(source, messages, tools, think)
    except TemplateError as e:  # e.g. a Jinja template's raise_exception, or a type a comparison refuses
        raise RkError("bad_request", f"the model's TEMPLATE failed on these messages: {e}", param="messages") from None


def _render(source: str, messages: list[Message], tools: tuple[Tool, ...], think: bool | None) -> str:
    if is_jinja(source):
        return str(_compiled(source).render(messages=[m.template_dict() for m in messages], add_generation_prompt=True,
                                             tools=[_tool(t).data for t in tools] or None, bos_token="", eos_token=""))
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    root: dict[str, Any] = {"System": system, "Messages": [_message(m) for m in messages], "Tools": [_tool(t) for t in tools],
                            "Prompt": "", "Response": "", "Think": bool(think), "IsThinkSet": think is not None}
    if "Messages" in source:
        return str(_compiled(source).render(_root=root))
    return _turns(source, messages, root)


def _turns(source: str, messages: list[Message], root: dict[str, Any]) -> str:
    """A template without `.Messages` (`.System`, `.Prompt`, `.Response`) is rendered once per turn, as
    Ollama does; the last turn is cut at `.Response`, so the prompt ends where the reply begins."""
    turns: list[tuple[str, str]] = []
    for m in messages:
        if m.role == "user":
            turns.append((m.content, ""))
        elif m.role == "assistant" and turns:
            turns[-1] = (turns[-1][0], turns[-1][1] + m.content)
    turns = turns or [("", "")]
    head = _RESPONSE.split(source, 1)[0]
    out = []
    for i, (prompt, response) in enumerate(turns):
        last = i == len(turns) - 1
        values = root | {"Prompt": prompt, "Response": response, "System": root["System"] if i == 0 else ""}
        out.append(str(_compiled(head, True).render(_root=values) if last else _compiled(source).render(_root=values)))
    return "".join(out)
