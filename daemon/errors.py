"""One error type for the whole daemon, with the stable codes every API renders in its own shape."""
from __future__ import annotations

from typing import Final

# code -> HTTP status. Adapters map codes to their own error shapes; this table is the one place
# a code's severity is decided.
HTTP_STATUS: Final[dict[str, int]] = {
    "bad_request": 400,
    "empty_input": 400,
    "prompt_too_large": 400,
    "not_embedding_model": 400,
    "not_chat_model": 400,
    "unsupported": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "model_not_found": 404,
    "request_timeout": 408,
    "request_too_large": 413,
    "slow_client": 408,
    "unsupported_media_type": 415,
    "too_many_jobs": 429,  # one client over RK_CLIENT_MAX_JOBS
    "cancelled": 499,
    "runner_crashed": 500,
    "model_failed": 500,
    "engine_crashed": 500,  # the engine crashed in a model's first prefill even with safe settings; a retry will too
    "internal": 500,
    "not_implemented": 501,
    "hub_unavailable": 502,  # the model hub failed or answered nonsense
    "digest_mismatch": 502,  # downloaded bytes that do not hash to what the hub announced
    "queue_full": 503,
    "shutting_down": 503,
    "timeout": 504,
    "insufficient_storage": 507,
}


class RkError(Exception):
    """A failure with a stable `code` that clients can branch on and a message a person can act on."""

    def __init__(self, code: str, message: str, *, param: str | None = None, status: int | None = None,
                 retry_after_s: int | None = None) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self._status = status  # a setting may choose another status for a code (RK_QUEUE_FULL_STATUS)
        self.retry_after_s = retry_after_s  # when to come back, for busy answers (`Retry-After`)

    @property
    def status(self) -> int:
        return self._status or HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"RkError({self.code!r}, {self.message!r})"
