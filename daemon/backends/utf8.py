"""Token bytes in, whole characters out: a character split over two tokens waits for the second."""
from __future__ import annotations

import codecs


class Utf8Stream:
    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._dec.decode(data)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
