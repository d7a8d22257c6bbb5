"""Fast in-process checks of the load figures balancers read (busy.py), the one-snapshot scrape, and the
client column of `rk top`. The daemons behind them: test_multiboard.py."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from rk.daemon.busy import DEFAULT_JOB_S, RECENT, JobTimes, Load
from rk.daemon.metrics import Metrics
from rk.daemon.status import RunnerView, Status
from rk.tui.render import queue_row
from rk.tui.snapshot import QueuedJob


def test_weight_falls_as_the_predicted_wait_grows() -> None:
    times = JobTimes()
    assert [times.load(jobs, 0.0, False).weight_percent() for jobs in range(4)] == [100, 50, 33, 25]
    assert times.load(2, 0.0, False).predicted_wait_s == 2 * DEFAULT_JOB_S
    for s in (3.0, 5.0):
        times.add(s)
    load = times.load(3, 0.0, False)
    assert (load.job_s, load.predicted_wait_s, load.retry_after_s()) == (4.0, 12.0, 12)
    assert Load(0.0, 0.0, 0.0, False).weight_percent() == 100  # no history of zero-time jobs: still idle
    assert Load(0.2, 1.0, 0.0, False).retry_after_s() == 1  # never 0
    assert JobTimes().load(10_000, 0.0, False).weight_percent() == 1  # never 0 %, which HAProxy reads as drain


def test_the_mean_forgets_old_jobs() -> None:
    times = JobTimes()
    for _ in range(RECENT):
        times.add(100.0)
    for _ in range(RECENT):
        times.add(1.0)
    assert times.mean() == 1.0


def test_one_status_snapshot_per_scrape() -> None:
    calls = []
    status = Status(queue=(), depth=3, running=("j1",), loaded=(), failed_models={}, totals={}, recent=(),
                    uptime_s=0.0, runner=RunnerView(None, 0.0, 0), load=Load(4.0, 1.0, 0.25, False))

    def snapshot() -> Status:
        calls.append(1)
        return status

    text = Metrics(snapshot, compat="vllm").render().decode()
    assert len(calls) == 1
    values = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert values["rk_queue_depth"] == values["vllm:num_requests_waiting"] == 3
    assert values["rk_predicted_wait_seconds"] == 4.0 and values["vllm:kv_cache_usage_perc"] == 0.25


def test_rk_top_shows_the_client() -> None:
    wire = {"id": "j1", "kind": "chat", "model": "m", "source": "ollama", "peer": "10.0.0.5:4000", "state": "waiting",
            "position": 2, "client_id": "key:81b637d8fc"}
    assert queue_row(QueuedJob.from_wire(wire))[-1] == "ollama key:81b637d8fc"
    assert queue_row(QueuedJob.from_wire(wire | {"client_id": ""}))[-1] == "ollama 10.0.0.5"  # older daemons
