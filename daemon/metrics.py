"""Prometheus metrics for `GET /metrics`: queue depth, jobs by outcome, tokens, timing histograms, restarts.

Balancers in front of several boards (nginx least_conn, LiteLLM's router) read these to spread load.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rk.daemon.errors import RkError
from rk.daemon.status import Status
from rk.daemon.ticket import Ticket

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Counters fed by the scheduler as each job finishes (`observe`); gauges read the status when scraped."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("rk_jobs", "Finished jobs by kind and outcome (done, cancelled or an error code)",
                            ["kind", "outcome"], registry=r)
        self.tokens = Counter("rk_generated_tokens", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("rk_prompt_tokens", "Prompt tokens evaluated (chat and embeddings)", registry=r)
        self.wait = Histogram("rk_job_wait_seconds", "Time jobs waited in the queue", registry=r, buckets=_BUCKETS)
        self.prefill = Histogram("rk_job_prefill_seconds", "Prefill time of chat jobs", registry=r, buckets=_BUCKETS)
        self.generate = Histogram("rk_job_generate_seconds", "Generation time of chat jobs", registry=r, buckets=_BUCKETS)
        Gauge("rk_queue_depth", "Jobs waiting in the queue", registry=r).set_function(lambda: status().depth)
        Gauge("rk_running_jobs", "Jobs running on the accelerator", registry=r).set_function(lambda: len(status().running))
        Gauge("rk_loaded_models", "Models resident in the runner", registry=r).set_function(lambda: len(status().loaded))
        Gauge("rk_runner_restarts", "Times the runner process was restarted", registry=r).set_function(
            lambda: status().runner.restarts)
        Gauge("rk_runner_rss_bytes", "Resident memory of the runner process", registry=r).set_function(
            lambda: status().runner.rss_mb * 2**20)

    def observe(self, t: Ticket, error: RkError | None) -> None:
        s = t.stats
        self.jobs.labels(t.kind, "done" if error is None else error.code).inc()
        if t.started is not None:
            self.wait.observe(s.wait_ms / 1000)
        if error is None and t.kind == "chat":
            self.prefill.observe(s.prefill_ms / 1000)
            self.generate.observe(s.generate_ms / 1000)
            self.tokens.inc(s.generate_tokens)
        if error is None:
            self.prompt_tokens.inc(s.prompt_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
