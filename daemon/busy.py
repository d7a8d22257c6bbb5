"""How busy this board is, in one place: the predicted wait that the agent-check port, `/health`,
`/metrics`, `Retry-After` and `rk ps` all report, so a balancer and a person see the same figure.

The rule is deliberately simple: every job in the queue, the running one included, counts as the
mean run time of the last RECENT jobs that finished (DEFAULT_JOB_S until one has). A balancer only
needs to rank boards and see a wait grow; it does not need a per-job forecast.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

RECENT = 20
DEFAULT_JOB_S = 1.0


@dataclass(frozen=True)
class Load:
    """The board's load as balancers see it."""

    predicted_wait_s: float  # until a job submitted now would start
    job_s: float  # the mean run time of recent jobs
    kv_cache_usage: float  # 0-1: the running chat's share of its model's context
    draining: bool  # `rk drain`: balancers send no new jobs

    def weight_percent(self) -> int:
        """HAProxy's agent weight: 100 when idle, 50 with one job ahead, 33 with two…"""
        if self.predicted_wait_s <= 0:
            return 100
        return max(1, min(100, round(100 * self.job_s / (self.job_s + self.predicted_wait_s))))

    def retry_after_s(self) -> int:
        """A `Retry-After` that says when a slot is likely free: at least 1 s."""
        return max(1, math.ceil(self.predicted_wait_s))


class JobTimes:
    """Run times of the last RECENT finished jobs."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=RECENT)

    def add(self, seconds: float) -> None:
        self._times.append(max(0.0, seconds))

    def mean(self) -> float:
        return sum(self._times) / len(self._times) if self._times else DEFAULT_JOB_S

    def load(self, jobs: int, kv_cache_usage: float, draining: bool) -> Load:
        """`jobs`: waiting and running jobs."""
        mean = self.mean()
        return Load(round(jobs * mean, 3), round(mean, 3), round(min(1.0, max(0.0, kv_cache_usage)), 4), draining)
