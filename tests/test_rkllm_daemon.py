"""The daemon end to end with the rkllm backend over each C double of librkllmrt.so (1.2.1 and 1.3.0)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from rk.client import Client, DaemonError

from daemon_proc import DaemonProc, start_daemon
from native_build import register_npu_models, rkllm_libs  # noqa: F401  (fixture)

TOKEN_DELAY_MS = 4
LONG = " ".join(f"w{i}" for i in range(400))  # ~1.6 s of tokens at the double's delay


@pytest.fixture(scope="module", params=["1.2", "1.3"])
def npu_daemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               rkllm_libs: dict[str, Path]) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp(f"npu-{request.param}")
    register_npu_models(tmp / "models")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False,
                     env={"RK_RKLLM_LIB": str(rkllm_libs[request.param]), "FAKE_RKLLM_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS)})
    yield d
    d.stop()


def chat(c: Client, text: str, **options: Any) -> str:
    return c.send("chat", model="npu:chat", messages=[{"role": "user", "content": text}], options=options or None)


def collect(c: Client, rids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every event of `rids` (interleaved on one connection) until each has ended; also records arrival order."""
    events: dict[str, list[dict[str, Any]]] = {r: [] for r in rids}
    open_ = set(rids)
    while open_:
        ev = c.read()
        if ev.get("id") in events:
            ev["_t"] = time.perf_counter()
            events[ev["id"]].append(ev)
            if ev["ev"] in ("done", "error"):
                open_.discard(ev["id"])
    return events


def test_chat_streams_and_reports_npu_figures(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        evs = list(c.events(chat(c, "hello wörld 日本")))
    kinds = [e["ev"] for e in evs]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "done"
    assert "".join(e["text"] for e in evs if e["ev"] == "token") == "hello wörld 日本 "
    stats = evs[-1]["stats"]
    assert stats["prefill_tokens"] == 3 and stats["generate_tokens"] == 12 and stats["memory_mb"] > 0


def test_max_tokens_reports_length(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        evs = list(c.events(chat(c, "a b c d e f", max_tokens=2)))
    assert "".join(e["text"] for e in evs if e["ev"] == "token") == "a "
    assert evs[-1]["stats"]["generate_tokens"] == 2 and evs[-1]["stats"]["finish_reason"] == "length"


def test_embed_returns_unit_vectors(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        evs = list(c.events(c.send("embed", model="npu:embed", input=["first text", "second", "first text"])))
    vec = np.array(next(e for e in evs if e["ev"] == "vectors")["embeddings"])
    assert vec.shape == (3, 16)
    assert np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vec[0], vec[2]) and not np.allclose(vec[0], vec[1])
    assert evs[-1]["stats"]["prompt_tokens"] == 5


def test_five_jobs_finish_in_arrival_order_with_positions(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        rids = [chat(c, f"job{i} " + " ".join(["x"] * 10)) for i in range(5)]
        events = collect(c, rids)
    ends = sorted(rids, key=lambda r: events[r][-1]["_t"])
    assert ends == rids
    for i, r in enumerate(rids):
        assert events[r][-1]["ev"] == "done"
        assert events[r][0] == {**events[r][0], "ev": "queued", "position": i + 1}
        text = "".join(e["text"] for e in events[r] if e["ev"] == "token")
        assert text.startswith(f"job{i} ")


def test_cancel_of_a_waiting_job(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        running = chat(c, " ".join(["y"] * 60))
        waiting = chat(c, "never runs")
        c.send("cancel", target=waiting)
        events = collect(c, [running, waiting])
    assert events[waiting][-1]["ev"] == "error" and events[waiting][-1]["code"] == "cancelled"
    assert not any(e["ev"] == "started" for e in events[waiting])
    assert events[running][-1]["ev"] == "done"


def test_crash_fails_only_its_job_and_the_next_queued_job_completes(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        crash = chat(c, "boom [[crash]]")
        after = chat(c, "still here")
        events = collect(c, [crash, after])
    assert events[crash][-1]["ev"] == "error" and events[crash][-1]["code"] == "runner_crashed"
    assert events[after][-1]["ev"] == "done"
    assert "".join(e["text"] for e in events[after] if e["ev"] == "token") == "still here "


def test_cancel_mid_stream_stops_the_run(npu_daemon: DaemonProc) -> None:
    """The cancel reaches rkllm_abort mid-run: the reply ends cancelled long before its 4,000 tokens
    (about 16 s at the double's pace), with no timing window a loaded machine could miss."""
    longer = " ".join(f"w{i}" for i in range(4000))
    with npu_daemon.client() as c:
        rid = chat(c, longer)
        tokens = 0
        for ev in c.events(rid):
            if ev["ev"] == "token":
                tokens += 1
                if tokens == 5:
                    break
        c.send("cancel", target=rid)
        with pytest.raises(DaemonError) as e:
            for ev in c.events(rid):
                tokens += ev["ev"] == "token"
    assert e.value.code == "cancelled"
    assert tokens < 4000, "the run went on to its end after the cancel"


def test_runtime_error_is_a_job_error(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        with pytest.raises(DaemonError) as e:
            list(c.events(chat(c, "[[error]]")))
        assert e.value.code == "model_failed"
        assert "".join(ev.get("text", "") for ev in c.events(chat(c, "ok then"))) == "ok then "


# ---- per-request sampling and multi-turn KV reuse through the daemon -----------------------------------
# The double answers "[[sampling]]" with the sampling it ran with, and "[[ctx]]" with the "#marker" words
# of its whole KV context in order; FINISH reports the tokens it was asked to prefill.

FILLER = " ".join(f"f{i}" for i in range(30))


def say(c: Client, history: list[dict[str, str]], tag: str, **options: Any) -> str:
    """Append this conversation's next user turn and send the whole history; returns the request id."""
    n = sum(m["role"] == "user" for m in history) + 1
    history.append({"role": "user", "content": f"#{tag}{n} {FILLER} [[ctx]]"})
    return c.send("chat", model="npu:chat", messages=history, options=options or None)


def fingerprint(tag: str, turns: int) -> str:
    return "ctx=" + ",".join(f"#{tag}{i}" for i in range(1, turns + 1)) + " "


def test_a_per_request_temperature_reaches_the_runtime(npu_daemon: DaemonProc) -> None:
    with npu_daemon.client() as c:
        hot, _ = c.reply(chat(c, "[[sampling]]", temperature=0.25, top_k=3))
        default, _ = c.reply(chat(c, "[[sampling]]"))
    assert "temperature=0.250 " in hot and "top_k=3 " in hot
    assert "temperature=0.800 " in default and "top_k=40 " in default


def test_turn_ten_prefills_a_tenth_with_kv_reuse(npu_daemon: DaemonProc) -> None:
    stats: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    with npu_daemon.client() as c:
        for reuse in (True, False):
            history: list[dict[str, str]] = []
            for turn in range(1, 11):
                text, s = c.reply(say(c, history, "A", cache_prompt=reuse))
                assert text == fingerprint("A", turn)  # the whole conversation, and only it, is in context
                history.append({"role": "assistant", "content": text})
                stats[reuse].append(s)
    with_reuse, without = stats[True][-1]["prefill_tokens"], stats[False][-1]["prefill_tokens"]
    assert with_reuse == 32  # "#A10", 30 filler words, "[[ctx]]"
    assert with_reuse / without <= 0.1, (with_reuse, without)


def test_two_conversations_interleaved_on_the_queue_stay_correct(npu_daemon: DaemonProc) -> None:
    hist: dict[str, list[dict[str, str]]] = {"A": [], "B": []}
    with npu_daemon.client() as c:
        for turn in range(1, 5):
            rids = {tag: say(c, hist[tag], tag) for tag in ("A", "B")}  # both queued before either runs
            for tag, rid in rids.items():
                text, s = c.reply(rid)
                assert text == fingerprint(tag, turn)
                assert turn == 1 or s["prefill_tokens"] > 32  # the cache held the other one: sent whole
                hist[tag].append({"role": "assistant", "content": text})
        for turn in (5, 6):  # A alone again: the second turn continues what the cache holds
            text, s = c.reply(say(c, hist["A"], "A"))
            assert text == fingerprint("A", turn)
            hist["A"].append({"role": "assistant", "content": text})
    assert s["prefill_tokens"] == 32
