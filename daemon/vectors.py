"""Embedding matrices for the wire: slices reassembled in input order, `dimensions` cuts, base64 float32.

Shared by the OpenAI and Ollama adapters so both APIs cut and encode vectors the same way.
"""
from __future__ import annotations

import base64
from typing import Iterable

import numpy as np

from rk.daemon.errors import RkError
from rk.daemon.events import Vectors


def assemble(slices: Iterable[Vectors]) -> np.ndarray:
    """One (n, dim) float32 matrix from the `Vectors` slices of a job, whatever order they came in."""
    parts = sorted(slices, key=lambda v: v.index)
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([np.asarray(v.embeddings, dtype=np.float32) for v in parts], axis=0)


def cut(matrix: np.ndarray, dimensions: int | None, param: str = "dimensions") -> np.ndarray:
    """Keep the first `dimensions` values of each row and scale rows back to unit length.

    Matryoshka-style truncation: a request for more dimensions than the model has is refused.
    """
    if dimensions is None or matrix.size == 0:
        return matrix
    dim = matrix.shape[1]
    if dimensions > dim:
        raise RkError("bad_request", f"'{param}' is {dimensions} but this model's vectors have {dim}", param=param)
    head = np.ascontiguousarray(matrix[:, :dimensions], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, 1e-12)


def check_finite(matrix: np.ndarray) -> None:
    """A NaN or Inf in a vector is a model failure, never something to send as a number."""
    if matrix.size and not np.isfinite(matrix).all():
        raise RkError("model_failed", "the model produced a vector with NaN or Inf values")


def b64_float32(row: np.ndarray) -> str:
    """IEEE-754 float32 little-endian bytes, standard base64: what OpenAI SDKs decode."""
    return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
