"""Prometheus metrics for `GET /metrics`: queue depth, jobs by outcome, tokens, timing histograms, restarts.

Gateways in front of several boards (the Gateway API Inference Extension's endpoint picker scrapes
them every 50 ms) read the queue gauges to spread load; see docs/multiboard.md.
"""
from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rk.daemon.errors import RkError
from rk.daemon.status import Status
from rk.daemon.ticket import Ticket

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class StatusGauges(Collector):
    """The gauges, all from ONE status snapshot per scrape (a scrape every 50 ms must stay cheap)."""

    def __init__(self, status: Callable[[], Status], compat: str) -> None:
        self.status = status
        self.compat = compat

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.status()
        waiting, running, kv = s.depth, len(s.running), s.load.kv_cache_usage
        yield GaugeMetricFamily("rk_queue_depth", "Jobs waiting in the queue", waiting)
        yield GaugeMetricFamily("rk_running_jobs", "Jobs running on the accelerator", running)
        yield GaugeMetricFamily("rk_predicted_wait_seconds", "Predicted wait before a new job starts "
                                "(jobs queued or running x recent mean job time)", s.load.predicted_wait_s)
        yield GaugeMetricFamily("rk_kv_cache_usage_perc", "Share (0-1) of the running chat's context in use", kv)
        yield GaugeMetricFamily("rk_loaded_models", "Models resident in the runner", len(s.loaded))
        loaded = GaugeMetricFamily("rk_model_loaded", "1 for each model resident in the runner", labels=["model"])
        for m in s.loaded:
            loaded.add_metric([m.name], 1)
        yield loaded
        yield GaugeMetricFamily("rk_runner_restarts", "Times the runner process was restarted", s.runner.restarts)
        yield GaugeMetricFamily("rk_runner_rss_bytes", "Resident memory of the runner process", s.runner.rss_mb * 2**20)
        if self.compat == "vllm":  # the names gateways with vLLM defaults read
            yield GaugeMetricFamily("vllm:num_requests_waiting", "Jobs waiting in the queue (rk_queue_depth)", waiting)
            yield GaugeMetricFamily("vllm:num_requests_running", "Jobs running (rk_running_jobs)", running)
            yield GaugeMetricFamily("vllm:kv_cache_usage_perc", "Context in use (rk_kv_cache_usage_perc)", kv)


class Metrics:
    """Counters fed by the scheduler as each job finishes (`observe`); gauges read the status when scraped."""

    def __init__(self, status: Callable[[], Status], compat: str = "") -> None:
        self.registry = r = CollectorRegistry()
        self.jobs = Counter("rk_jobs", "Finished jobs by kind and outcome (done, cancelled or an error code)",
                            ["kind", "outcome"], registry=r)
        self.tokens = Counter("rk_generated_tokens", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("rk_prompt_tokens", "Prompt tokens evaluated (chat and embeddings)", registry=r)
        self.wait = Histogram("rk_job_wait_seconds", "Time jobs waited in the queue", registry=r, buckets=_BUCKETS)
        self.prefill = Histogram("rk_job_prefill_seconds", "Prefill time of chat jobs", registry=r, buckets=_BUCKETS)
        self.generate = Histogram("rk_job_generate_seconds", "Generation time of chat jobs", registry=r, buckets=_BUCKETS)
        r.register(StatusGauges(status, compat))

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
