"""`GET /metrics`: Prometheus text with jobs by outcome, tokens, queue depth and timing histograms."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rk.client import DaemonError

from daemon_proc import DaemonProc


def scrape(d: DaemonProc) -> dict[str, float]:
    r = httpx.get(f"{d.base_url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_metrics_count_jobs_by_outcome_and_tokens(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        c.call("chat", model="syn:chat", messages=[{"role": "user", "content": "a b c d"}])
        c.call("embed", model="syn:embed", input=["x y", "z"])
        try:
            c.call("chat", model="syn:chat", messages=[{"role": "user", "content": "[[crash]]"}])
            raise AssertionError("the crash prompt did not crash the runner")
        except DaemonError as e:
            assert e.code == "runner_crashed"
        c.call("chat", model="syn:chat", messages=[{"role": "user", "content": "again"}])  # on a new runner
    m = scrape(syn_daemon)
    assert m["rk_jobs_total{kind=chat,outcome=done}"] == 2
    assert m["rk_jobs_total{kind=embed,outcome=done}"] == 1
    assert m["rk_jobs_total{kind=chat,outcome=runner_crashed}"] == 1
    assert m["rk_generated_tokens_total{}"] == 5
    assert m["rk_queue_depth{}"] == 0
    assert m["rk_job_wait_seconds_count{}"] == 4
    assert m["rk_job_prefill_seconds_count{}"] == 2
    assert m["rk_runner_restarts{}"] == 1
