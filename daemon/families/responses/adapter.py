"""OpenAI Responses (`/v1/responses`) wire format: request JSON -> chat jobs, job output -> response objects,
stream events and errors.

Pure translation. Field rules follow shared/reference/agent-apis.md (what Ollama honours, what Codex 0.171
sends): tool types rk cannot run (Codex always sends `web_search`) are dropped and logged, `namespace` tools are
flattened to `namespace.name`, `developer` messages are system messages, and `previous_response_id` continues
from a bounded in-memory store (`ResponseStore`) or is refused with a 400 that says so.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from rk.daemon import media
from rk.daemon.errors import RkError
from rk.daemon.families import fields as f
from rk.daemon.families.openai import adapter as openai
from rk.daemon.jobs import ChatJob, Format, Generated, GenSpec, JobStats, Message, Think, Tool, ToolCall
from rk.daemon.media import Image
from rk.daemon.store.models import Manifest

log = logging.getLogger("rk.daemon.responses")

EFFORTS: dict[str, Think] = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
                             "xhigh": "high", "max": "high"}
HISTORY_ITEMS = ("web_search_call", "file_search_call", "computer_call", "computer_call_output", "image_generation_call",
                 "code_interpreter_call", "local_shell_call", "local_shell_call_output", "mcp_call", "mcp_list_tools",
                 "item_reference", "compaction")
KEPT_RESPONSES = 64


@dataclass(frozen=True)
class ResponsesRequest:
    job: ChatJob
    model: str
    stream: bool
    conversation: tuple[Message, ...]  # the input, after any stored history, without `instructions`
    echo: dict[str, Any]  # the request's settings every response object repeats
    store: bool = True


class ResponseStore:
    """The last `KEPT_RESPONSES` conversations (input + reply) by response id, so `previous_response_id` can
    continue one. In memory only: a restart forgets them, and the 400 for an unknown id says so."""

    def __init__(self, size: int = KEPT_RESPONSES) -> None:
        self.size = size
        self._kept: OrderedDict[str, tuple[Message, ...]] = OrderedDict()

    def put(self, response_id: str, conversation: tuple[Message, ...]) -> None:
        self._kept[response_id] = conversation
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def get(self, response_id: str) -> tuple[Message, ...]:
        conv = self._kept.get(response_id)
        if conv is None:
            raise f.bad("previous_response_id", f"{response_id!r} is not one of the {self.size} latest stored responses "
                        "rk keeps in memory (it keeps none across restarts, nor those sent with store: false); send "
                        "the whole conversation as input instead")
        self._kept.move_to_end(response_id)
        return conv


# ---- requests ----------------------------------------------------------------------------------


def _image(part: dict[str, Any], where: str) -> Image:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise f.bad(where, "input_image needs an image_url (a base64 data URL); file ids are not supported")
    return media.decode(f.b64(url, where), where)


def _parts(v: Any, where: str) -> tuple[str, tuple[Image, ...]]:
    """A message's (or a function output's) content: a string, or input_text/output_text/input_image parts."""
    if isinstance(v, str):
        return v, ()
    if not isinstance(v, list):
        raise f.bad(where, "must be a string or a list of content parts")
    texts: list[str] = []
    images: list[Image] = []
    for i, p in enumerate(v):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = p.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise f.bad(f"{where}[{i}].text", "must be a string")
            texts.append(text)
        elif kind == "input_image":
            images.append(_image(p, f"{where}[{i}]"))
        elif kind == "input_file":
            raise f.bad(f"{where}[{i}]", "file inputs are not supported: send their text")
        else:
            raise f.bad(f"{where}[{i}]", "must be an input_text, output_text or input_image part")
    return "".join(texts), tuple(images)


def _reasoning_text(item: dict[str, Any]) -> str:
    """A replayed reasoning item's text: its summary, its content, or (Ollama and rk write the text there) its
    `encrypted_content`."""
    for key, text_key in (("summary", "text"), ("content", "text")):
        parts = item.get(key)
        if isinstance(parts, list):
            text = "".join(p[text_key] for p in parts if isinstance(p, dict) and isinstance(p.get(text_key), str))
            if text:
                return text
    enc = item.get("encrypted_content")
    return enc if isinstance(enc, str) else ""


def items(v: Any) -> list[Message]:
    """`input`: a string (one user message) or items. Calls follow the assistant text they belong to (consecutive
    calls are one assistant turn); a reasoning item becomes the next assistant turn's thinking."""
    if isinstance(v, str):
        return [Message("user", v)]
    if not isinstance(v, list):
        raise f.bad("input", "must be a string or a list of input items")
    out: list[Message] = []
    names: dict[str, str] = {}
    thinking = ""
    for i, it in enumerate(v):
        where = f"input[{i}]"
        if not isinstance(it, dict):
            raise f.bad(where, "must be an object")
        kind = it.get("type", "message" if "role" in it else None)
        if kind == "message":
            msg = _message(it, where, thinking)
            thinking = "" if msg.role == "assistant" else thinking
            out.append(msg)
        elif kind == "function_call":
            call = _function_call(it, where)
            names[call.id] = call.name
            thinking = _append_call(out, call, thinking)
        elif kind == "function_call_output":
            out.append(_call_output(it, where, names))
        elif kind == "reasoning":
            thinking += _reasoning_text(it)
        elif kind in HISTORY_ITEMS:
            log.info("%s: a %s item is history rk cannot replay; skipped", where, kind)
        else:
            raise f.bad(f"{where}.type", f"unknown input item type {kind!r}")
    return out


def _message(it: dict[str, Any], where: str, thinking: str) -> Message:
    """A message item; an assistant's carries the reasoning that came before it."""
    role = it.get("role")
    role = "system" if role == "developer" else role
    if role not in ("system", "user", "assistant"):
        raise f.bad(f"{where}.role", "must be user, assistant, system or developer")
    text, images = _parts(it.get("content"), f"{where}.content")
    if role == "assistant":
        return Message("assistant", text, images=images, thinking=thinking or None)
    return Message(role, text, images=images)


def _function_call(it: dict[str, Any], where: str) -> ToolCall:
    name, call_id = it.get("name"), it.get("call_id")
    if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
        raise f.bad(where, "a function_call needs a 'call_id' and a 'name'")
    return ToolCall(name, f.arguments(it.get("arguments"), f"{where}.arguments"), call_id)


def _append_call(out: list[Message], call: ToolCall, thinking: str) -> str:
    """Joins the assistant turn just before it, unless reasoning came between; returns the reasoning still pending."""
    last = out[-1] if out else None
    if last is not None and last.role == "assistant" and not thinking:
        out[-1] = dataclasses.replace(last, tool_calls=last.tool_calls + (call,))
        return thinking
    out.append(Message("assistant", "", tool_calls=(call,), thinking=thinking or None))
    return ""


def _call_output(it: dict[str, Any], where: str, names: dict[str, str]) -> Message:
    call_id = it.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise f.bad(f"{where}.call_id", "is required")
    text, images = _parts(it.get("output", ""), f"{where}.output")
    return Message("tool", text, images=images, tool_call_id=call_id, tool_name=names.get(call_id))

def tools(d: dict[str, Any]) -> tuple[Tool, ...]:
    """Function tools, `namespace` tools flattened to `namespace.name`; every other type (web_search,
    file_search, custom...) is a tool rk cannot run: dropped and logged, not a 400 (Codex always sends one)."""
    v = d.get("tools")
    if v is None:
        return ()
    if not isinstance(v, list):
        raise f.bad("tools", "must be a list of tools")
    out: list[Tool] = []

    for i, t in enumerate(v):
        where = f"tools[{i}]"
        kind = t.get("type") if isinstance(t, dict) else None
        if not isinstance(t, dict):
            raise f.bad(where, "must be an object")
        if kind == "function":
            out.append(f.flat_tool(t, where, "parameters"))
        elif kind == "namespace" and isinstance(t.get("tools"), list) and isinstance(t.get("name"), str):
            for j, member in enumerate(t["tools"]):
                if not isinstance(member, dict) or member.get("type", "function") != "function":
                    log.info("%s.tools[%d]: not a function tool; dropped", where, j)
                    continue
                out.append(f.flat_tool(member, f"{where}.tools[{j}]", "parameters", t["name"] + "."))
        else:
            log.info("%s: %r is a tool type rk cannot run; dropped", where, kind)
    return tuple(out)


def tool_choice(d: dict[str, Any], names: set[str]) -> str:
    """"auto", "none", "required", or `{type: "function", name}`; other hosted choices count as auto."""
    v = d.get("tool_choice")
    if v is None or v == "auto" or (isinstance(v, dict) and v.get("type") == "allowed_tools"):
        return "auto"
    if v in ("none", "required"):
        return str(v)
    if isinstance(v, dict) and v.get("type") == "function":
        return f.tool_named(v.get("name"), names, "tool_choice.name")
    raise f.bad("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "name": ...}')


def text_format(d: dict[str, Any]) -> Format:
    """`text.format`: text, json_object, or json_schema with its `schema` beside the type (rk's structured output)."""
    text = d.get("text")
    return openai.format_object(text.get("format") if isinstance(text, dict) else None, "text.format")


def think(d: dict[str, Any], manifest: Manifest | None) -> Think:
    r = d.get("reasoning")
    effort = r.get("effort") if isinstance(r, dict) else None
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise f.bad("reasoning.effort", "must be none, minimal, low, medium, high or xhigh")
    level = EFFORTS[effort]
    return None if level and manifest is not None and not manifest.can("thinking") else level


def parse(body: Any, peer: str, manifest: Manifest | None, store: ResponseStore) -> ResponsesRequest:
    """`POST /v1/responses`. `manifest` is the model's when known (a reasoning effort asked of a model that
    cannot think is relaxed, as on /v1/messages)."""
    d = f.obj(body)
    model = f.string(d, "model", required=True)
    assert model is not None
    previous = f.string(d, "previous_response_id")
    history = store.get(previous) if previous else ()
    if d.get("conversation") is not None:
        raise f.bad("conversation", "is not supported: send the input, or a previous_response_id")
    conversation = history + tuple(items(d.get("input", [])))
    if not conversation:
        raise f.bad("input", "is required")
    instructions = f.string(d, "instructions")
    msgs = ((Message("system", instructions),) if instructions else ()) + conversation
    media.check_count(sum(len(m.images) for m in msgs), "input")
    fn_tools = tools(d)
    opts = f.gen_options(d, max_tokens_keys=("max_output_tokens",))
    f.boolean(d, "parallel_tool_calls", True)  # checked for type; the model decides how many calls it makes
    spec = GenSpec(messages=f.system_first(msgs), options=opts, tools=fn_tools,
                   tool_choice=tool_choice(d, {t.name for t in fn_tools}), think=think(d, manifest),
                   format=text_format(d))
    echo = {"instructions": instructions, "tools": d.get("tools") or [], "tool_choice": d.get("tool_choice") or "auto",
            "parallel_tool_calls": d.get("parallel_tool_calls", True), "temperature": opts.temperature,
            "top_p": opts.top_p, "max_output_tokens": opts.max_tokens, "previous_response_id": previous,
            "reasoning": d.get("reasoning") or {"effort": None, "summary": None},
            "text": d.get("text") or {"format": {"type": "text"}}, "metadata": d.get("metadata") or {},
            "store": f.boolean(d, "store", True), "truncation": "disabled"}
    job = ChatJob(model=model, spec=spec, source="openai", peer=peer)
    return ResponsesRequest(job, model, f.boolean(d, "stream", False), conversation, echo, echo["store"])


# ---- replies -----------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def usage(stats: JobStats) -> dict[str, Any]:
    return {"input_tokens": stats.prompt_tokens, "input_tokens_details": {"cached_tokens": stats.cached_tokens},
            "output_tokens": stats.generate_tokens,
            "output_tokens_details": {"reasoning_tokens": stats.thinking_tokens},
            "total_tokens": stats.prompt_tokens + stats.generate_tokens}


def status(stats: JobStats) -> tuple[str, dict[str, str] | None]:
    """The one place rk's end of a reply becomes a Response's status: `length` is incomplete."""
    if stats.finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """Thinking as a reasoning item; its text is the summary and, as Ollama writes it, the `encrypted_content`
    Codex replays next turn."""
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary, "encrypted_content": text}


def message_item(item_id: str, text: str, state: str = "completed") -> dict[str, Any]:
    content = [output_text(text)] if state == "completed" else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": state, "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, c: ToolCall, state: str = "completed") -> dict[str, Any]:
    args = orjson.dumps(c.arguments).decode() if state == "completed" else ""
    return {"id": item_id, "type": "function_call", "call_id": c.id or new_id("call"), "name": c.name,
            "arguments": args, "status": state}


@dataclass
class Reply:
    """One response's identity and settings: the same `id` and `created_at` in every event and the final object."""

    model: str
    echo: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def obj(self, state: str, output: list[dict[str, Any]], stats: JobStats | None = None,
            incomplete: dict[str, str] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": state,
                "completed_at": int(time.time()) if state == "completed" else None, "model": self.model,
                "output": output, "usage": usage(stats) if stats is not None else None, "error": error,
                "incomplete_details": incomplete, **self.echo}

    def final(self, gen: Generated) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if gen.thinking:
            output.append(reasoning_item(new_id("rs"), gen.thinking))
        if gen.text or not gen.tool_calls:
            output.append(message_item(new_id("msg"), gen.text))
        output += [call_item(new_id("fc"), c) for c in gen.tool_calls]
        state, incomplete = status(gen.stats)
        return self.obj(state, output, gen.stats, incomplete)


def assistant_turn(output: list[dict[str, Any]]) -> Message:
    """A response's output as the assistant turn a later `previous_response_id` continues from."""
    text = "".join(p["text"] for it in output if it["type"] == "message" for p in it["content"])
    thinking = "".join(it["encrypted_content"] for it in output if it["type"] == "reasoning")
    calls = tuple(ToolCall(it["name"], orjson.loads(it["arguments"] or "{}"), it["call_id"])
                  for it in output if it["type"] == "function_call")
    return Message("assistant", text, tool_calls=calls, thinking=thinking or None)


Event = tuple[str, dict[str, Any]]


@dataclass
class ResponseEvents:
    """Responses' stream for one reply: every event numbered from 0; one output item per kind of output (opened
    on its first piece, closed when another begins); `response.completed` repeats the whole output."""

    reply: Reply
    seq: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)  # finished items, in order
    open: dict[str, Any] | None = None  # the item being written (reasoning or message)
    parts: list[str] = field(default_factory=list)  # its text so far
    finished: bool = False  # the reply ended (completed or incomplete), not failed

    def _ev(self, kind: str, **data: Any) -> Event:
        ev = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return kind, ev

    def start(self) -> list[Event]:
        r = self.reply.obj("in_progress", [])
        return [self._ev("response.created", response=r), self._ev("response.in_progress", response=r)]

    def keepalive(self) -> list[Event]:
        """Responses has no ping: `response.in_progress` again, with the items finished so far. An SSE comment
        would not do: Codex's idle timeout counts events, and a parser skips comments."""
        return [self._ev("response.in_progress", response=self.reply.obj("in_progress", list(self.output)))]

    @property
    def _index(self) -> int:
        return len(self.output)

    def _close(self) -> list[Event]:
        item, text, i = self.open, "".join(self.parts), self._index
        if item is None:
            return []
        self.open, self.parts = None, []
        where = {"item_id": item["id"], "output_index": i}
        if item["type"] == "reasoning":
            done = reasoning_item(item["id"], text)
            events = [self._ev("response.reasoning_summary_text.done", **where, summary_index=0, text=text),
                      self._ev("response.reasoning_summary_part.done", **where, summary_index=0,
                               part={"type": "summary_text", "text": text})]
        else:
            done = message_item(item["id"], text)
            events = [self._ev("response.output_text.done", **where, content_index=0, text=text, logprobs=[]),
                      self._ev("response.content_part.done", **where, content_index=0, part=output_text(text))]
        self.output.append(done)
        return events + [self._ev("response.output_item.done", output_index=i, item=done)]

    def _open(self, kind: str) -> list[Event]:
        if self.open is not None and self.open["type"] == kind:
            return []
        out = self._close()
        i = self._index
        if kind == "reasoning":
            self.open = {"id": new_id("rs"), "type": "reasoning", "summary": []}
            return out + [self._ev("response.output_item.added", output_index=i, item=self.open),
                          self._ev("response.reasoning_summary_part.added", item_id=self.open["id"], output_index=i,
                                   summary_index=0, part={"type": "summary_text", "text": ""})]
        self.open = message_item(new_id("msg"), "", "in_progress")
        return out + [self._ev("response.output_item.added", output_index=i, item=self.open),
                      self._ev("response.content_part.added", item_id=self.open["id"], output_index=i,
                               content_index=0, part=output_text(""))]

    def text(self, t: str) -> list[Event]:
        out = self._open("message")
        self.parts.append(t)
        assert self.open is not None
        return out + [self._ev("response.output_text.delta", item_id=self.open["id"], output_index=self._index,
                               content_index=0, delta=t, logprobs=[])]

    def thinking(self, t: str) -> list[Event]:
        out = self._open("reasoning")
        self.parts.append(t)
        assert self.open is not None
        return out + [self._ev("response.reasoning_summary_text.delta", item_id=self.open["id"],
                               output_index=self._index, summary_index=0, delta=t)]

    def tool_call(self, c: ToolCall) -> list[Event]:
        out = self._close()
        i, item_id = self._index, new_id("fc")
        added = call_item(item_id, c, "in_progress")
        done = added | {"arguments": orjson.dumps(c.arguments).decode(), "status": "completed"}
        self.output.append(done)
        return out + [self._ev("response.output_item.added", output_index=i, item=added),
                      self._ev("response.function_call_arguments.delta", item_id=item_id, output_index=i,
                               delta=done["arguments"]),
                      self._ev("response.function_call_arguments.done", item_id=item_id, output_index=i,
                               name=c.name, arguments=done["arguments"]),
                      self._ev("response.output_item.done", output_index=i, item=done)]

    def done(self, stats: JobStats, called: bool = False) -> list[Event]:
        out = self._close()
        self.finished = True
        state, incomplete = status(stats)
        final = self.reply.obj(state, self.output, stats, incomplete)
        return out + [self._ev("response.completed" if state == "completed" else "response.incomplete",
                               response=final)]

    def error(self, e: RkError) -> list[Event]:
        """A failure after the stream began: `response.failed`, with the same codes as the error bodies
        (Codex reads `context_length_exceeded` and tells its user the model ran out of room)."""
        err = error(e.status, e.message, e.code, e.param)["error"]
        return self._close() + [self._ev("response.failed", response=self.reply.obj(
            "failed", self.output, error={"code": err["code"], "message": e.message}))]


def error(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body; a prompt over the context is `context_length_exceeded`, as OpenAI says it."""
    return openai.error(status, message, "context_length_exceeded" if code == "prompt_too_large" else code, param)
