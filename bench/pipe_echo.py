"""Baseline child for the idle-gap benchmark: echo each JSON line back, parsed and re-encoded like a runner."""
from __future__ import annotations

import sys

import orjson


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        cmd = orjson.loads(line)
        out.write(orjson.dumps({"ev": "done", "seq": cmd.get("seq"), "result": {}}) + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
