"""Scripted test models that write what thinking, tool-calling models write (see the synthetic backend's
script mode), registered with a real model's chat template so the daemon picks its parsers from it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon_proc import write_manifest

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
QWEN3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
SCRIPT, NEXT, HOLD, TOOL = "[[script]]", "[[next]]", "[[hold]]", "[[tool]]"


def tool_models(models_dir: Path, gate: Path, token_chars: int = 4) -> None:
    """`qwen:tools` (tools + thinking, Qwen3's template) and `plain:chat` (completion only, a ChatML template)."""
    common: dict[str, Any] = {"backend": "synthetic", "context_length": 8192}
    params = {"script": True, "token_chars": token_chars, "tokens_per_s": 5000.0, "gate": str(gate)}
    write_manifest(models_dir, "qwen:tools", **common, family="qwen3", template=QWEN3,
                   capabilities=["completion", "tools", "thinking"], params=params)
    write_manifest(models_dir, "qwen:bytes", **common, family="qwen3", template=QWEN3,
                   capabilities=["completion", "tools", "thinking"], params={**params, "token_chars": 1})
    write_manifest(models_dir, "plain:chat", **common, family="llama", capabilities=["completion"],
                   template=(TEMPLATES / "chatml-plain.jinja").read_text(encoding="utf-8"), params=params)


def call(name: str, **arguments: Any) -> str:
    """A Hermes tool-call block, as Qwen writes it."""
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def script(*replies: str) -> str:
    """A user message that makes a scripted model write `replies`, one per round."""
    return "Please help. " + SCRIPT + NEXT.join(replies)


def stream_behind_a_held_job(url: str, first: dict[str, Any], second: dict[str, Any], headers: dict[str, str],
                             gate: Path, keepalive: str) -> list[tuple[str, dict[str, Any]]]:
    """Stream `first` (a script starting with `[[hold]]`: it runs and holds) until it is accepted, then
    `second`, which waits behind it; the gate opens once `second` has sent two `keepalive` events. Returns
    `second`'s (event, data) pairs; `first` must then end too."""
    import httpx

    events: list[tuple[str, dict[str, Any]]] = []
    try:
        with httpx.stream("POST", url, json=first, headers=headers, timeout=60) as blocker:
            blocked = blocker.iter_lines()
            assert next(blocked).startswith("event: ")  # accepted: it runs, held at its [[hold]]
            with httpx.stream("POST", url, json=second, headers=headers, timeout=60) as r:
                name = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        events.append((name, json.loads(line[6:])))
                        if [n for n, _ in events].count(keepalive) == 2:
                            gate.touch()  # a keep-alive came while the job waited: let the first job finish
            assert any(line.startswith("data: ") for line in blocked)
    finally:
        gate.unlink(missing_ok=True)
    return events
