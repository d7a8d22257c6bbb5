"""The baseline service: a minimal FastAPI + uvicorn app (the seed services' stack) doing the same JSON work.

It parses the same request bodies and answers in the same shapes as rk's `/api/version` and
`/v1/chat/completions` (a one-token reply), with no queue, no model and no runner process behind it:
whatever rk spends beyond this is the price of its queue, runner IPC and protocol adapters.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": "0.6.0", "rk_version": "baseline"}


@app.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, Any]:
    body = await request.json()
    text = (body.get("messages") or [{}])[-1].get("content", "").split()[:1]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""), "system_fingerprint": "baseline",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(text)},
                     "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
