"""One INFO line per HTTP request and per line-protocol job, like Ollama's request log (`--quiet` mutes it).

The lines go to the `rk.access` logger, so a deployment can route or silence them on their own.
"""
from __future__ import annotations

import logging

log = logging.getLogger("rk.access")


def http(peer: str, method: str, path: str, status: int, nbytes: int, ms: float, request_id: str) -> None:
    log.info("%s %s %s %d %dB %.1fms id=%s", peer, method, path, status, nbytes, ms, request_id)


def job(peer: str, op: str, model: str, outcome: str, ms: float, client_id: str, job_id: str) -> None:
    log.info("%s line %s %s %s %.1fms id=%s job=%s", peer, op, model, outcome, ms, client_id, job_id)
