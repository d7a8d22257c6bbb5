"""A long prefill reports its progress: the stall watchdog (RK_STALL_TIMEOUT) sees a live engine, not a hung one,
and clients see how far the prompt has been read (`prefilling` events, the job's progress in `status`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from daemon_proc import DaemonProc, write_manifest

STALL_S = 2  # the watchdog's limit; the prefill below takes twice as long, reporting ten times on the way


def test_a_prefill_longer_than_the_stall_timeout_survives_by_reporting_progress(
        tmp_path: Path, daemon_factory: Callable[..., DaemonProc]) -> None:
    models = tmp_path / "models"
    write_manifest(models, "slow:prefill", backend="synthetic", capabilities=["completion"], context_length=4096,
                   params={"prefill_s": 2 * STALL_S})
    d = daemon_factory(models_dir=models, env={"RK_STALL_TIMEOUT": str(STALL_S)})
    words = " ".join(f"w{i}" for i in range(100))
    with d.client() as c:
        rid = c.send("chat", model="slow:prefill", messages=[{"role": "user", "content": words}],
                     options={"max_tokens": 3})
        events: list[dict[str, Any]] = list(c.events(rid))
    kinds = [e["ev"] for e in events]
    assert kinds[-1] == "done", events[-1]
    steps = [(e["done"], e["total"]) for e in events if e["ev"] == "prefilling"]
    assert steps == [(10 * i, 100) for i in range(1, 11)]
    assert kinds.index("prefill") > kinds.index("prefilling")  # progress first, then the prefill's figures
    assert "timeout" not in d.log() and "restarted" not in d.log()
