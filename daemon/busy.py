"""How busy this board is, in one place: the predicted wait that the agent-check port, `/health`,
`/metrics`, `Retry-After` and `rk ps` all report, so a balancer and a person see the same figure.

The rule is deliberately simple: every job in the queue, the running one included, counts as the
mean run time of the last RECENT jobs that finished (DEFAULT_JOB_S until one has). A balancer only
needs to rank boards and see a wait grow; it does not need a per-job forecast.
"""
from __future__ import annotations

import math
from collections import deque

from rk.protocol import LoadView

RECENT = 20
DEFAULT_JOB_S = 1.0


def weight_percent(load: LoadView) -> int:
    """HAProxy's agent weight: 100 when idle, 50 with one job ahead, 33 with two…"""
    if load.predicted_wait_s <= 0:
        return 100
    return max(1, min(100, round(100 * load.job_s / (load.job_s + load.predicted_wait_s))))


def retry_after_s(load: LoadView) -> int:
    """A `Retry-After` that says when a slot is likely free: at least 1 s."""
    return max(1, math.ceil(load.predicted_wait_s))


class JobTimes:
    """Run times of the last RECENT finished jobs."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=RECENT)

    def add(self, seconds: float) -> None:
        self._times.append(max(0.0, seconds))

    def mean(self) -> float:
        return sum(self._times) / len(self._times) if self._times else DEFAULT_JOB_S

    def load(self, jobs: int, kv_cache_usage: float, draining: bool) -> LoadView:
        """`jobs`: waiting and running jobs."""
        mean = self.mean()
        return LoadView(round(jobs * mean, 3), round(mean, 3), round(min(1.0, max(0.0, kv_cache_usage)), 4), draining)
