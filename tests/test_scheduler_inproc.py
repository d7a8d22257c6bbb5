"""The scheduler in-process, against a fake RunnerPort: FIFO, positions, cancel, send-ahead, residency,
retries after a dead runner, timeouts, capabilities. Each case runs in milliseconds; every wait is for
an event, bounded by a generous limit, never a timing window."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from rk.daemon import events as ev
from rk.daemon.errors import RkError
from rk.daemon.jobs import ChatJob, EmbedJob, GenOptions, GenSpec, Message, ModelAction, Tool
from rk.daemon.scheduler import Scheduler
from rk.daemon.settings import Settings
from rk.daemon.store.models import ModelStore
from rk.daemon.ticket import Ticket

from daemon_proc import write_manifest
from fake_runner import FakeRunner

LIMIT = 10.0  # seconds any single wait may take before the test fails: generous, never a measurement


def manifest(models: Path, name: str, **fields: Any) -> None:
    write_manifest(models, name, backend="synthetic", **fields)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    m = tmp_path / "models"
    manifest(m, "chat:a", capabilities=["completion"])
    manifest(m, "chat:b", capabilities=["completion"])
    manifest(m, "embed:a", capabilities=["embedding"])
    manifest(m, "tools:a", capabilities=["completion", "tools", "thinking"])
    return m


Run = Callable[[Callable[[Scheduler, FakeRunner], Awaitable[None]]], None]


@pytest.fixture
def run(models: Path, tmp_path: Path) -> Callable[..., None]:
    """Run `body(scheduler, runner)` with the scheduler's loop going; settings overridable by keyword."""
    def go(body: Callable[[Scheduler, FakeRunner], Awaitable[None]], **settings: Any) -> None:
        async def main() -> None:
            runner = FakeRunner()
            s = Settings(models_dir=models, socket=tmp_path / "s.sock", bundled=False, **settings)
            sched = Scheduler(s, ModelStore(models, bundled=False), runner)  # type: ignore[arg-type]
            loop = asyncio.create_task(sched.run())
            try:
                await asyncio.wait_for(body(sched, runner), LIMIT)
            finally:
                loop.cancel()
        asyncio.run(main())
    return go


def chat(text: str, model: str = "chat:a", **kw: Any) -> ChatJob:
    keep = kw.pop("keep_alive_s", None)
    return ChatJob(model=model, spec=GenSpec(messages=(Message("user", text),), **kw), keep_alive_s=keep)


async def final(t: Ticket) -> ev.Done | ev.Failed:
    async for e in t.stream():
        if isinstance(e, (ev.Done, ev.Failed)):
            return e
    raise AssertionError("no final event")


async def events(t: Ticket) -> list[Any]:
    return [e async for e in t.stream()]


def test_jobs_run_in_arrival_order_and_positions_count_down(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        gate = r.gate("first")
        tickets = [s.submit(chat("first"))] + [s.submit(chat(f"job {i}")) for i in range(3)]
        await r.started["first"].wait()
        assert [t.position for t in tickets[1:]] == [2, 3, 4]  # jobs ahead, the running one included, + 1
        gate.set()
        outs = [await events(t) for t in tickets]
        assert [c for c, d in r.log if c == "run"] == ["run"] * 4
        assert [d for c, d in r.log if c == "run"] == ["first", "job 0", "job 1", "job 2"]
        positions = [[e.position for e in out if isinstance(e, ev.Queued)] for out in outs]
        assert positions[3] == [4, 3, 2, 1]  # pushed each time it changed
        assert all(isinstance(out[-1], ev.Done) for out in outs)
    run(body)


def test_cancel_a_waiting_job_removes_it_at_once_and_the_rest_keep_order(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        gate = r.gate("hold")
        head, doomed, tail = s.submit(chat("hold")), s.submit(chat("doomed")), s.submit(chat("tail"))
        await r.started["hold"].wait()
        assert s.cancel(doomed.id)
        out = await final(doomed)
        assert isinstance(out, ev.Failed) and out.error.code == "cancelled"
        assert tail.position == 2
        gate.set()
        assert isinstance(await final(head), ev.Done) and isinstance(await final(tail), ev.Done)
        assert "doomed" not in [d for c, d in r.log if c == "run"]
        assert not s.cancel(doomed.id)  # finished: unknown now
    run(body)


def test_cancel_a_running_job_aborts_it_in_the_runner(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        r.gate("long running job")
        t = s.submit(chat("long running job"))
        nxt = s.submit(chat("next"))
        await r.started["long running job"].wait()
        s.cancel(t.id)
        out = await final(t)
        assert isinstance(out, ev.Failed) and out.error.code == "cancelled" and r.cancelled
        assert isinstance(await final(nxt), ev.Done)
    run(body)


def test_next_chats_are_sent_ahead_and_a_cancelled_one_is_discarded(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        s.submit(chat("warm"))  # loads the model, so the next ones can go ahead
        await asyncio.sleep(0)
        gate = r.gate("a")
        a = s.submit(chat("a"))
        rest = [s.submit(chat(x)) for x in ("b", "c", "d")]
        await r.started["a"].wait()
        assert [d for c, d in r.log if c == "ahead"] == ["b", "c"]  # SEND_AHEAD = 2, in queue order
        s.cancel(rest[0].id)
        assert ("discard", rest[0].sent.seq if rest[0].sent else None) in r.log or any(c == "discard" for c, _ in r.log)
        gate.set()
        for t in [a, *rest]:
            await final(t)
        assert [d for c, d in r.log if c == "run"][-3:] == ["a", "c", "d"]  # b never ran
    run(body)


def test_a_model_loads_once_and_keep_alive_zero_unloads_after_the_job(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        for t in [s.submit(chat(f"x{i}")) for i in range(3)]:
            await final(t)
        assert [d for c, d in r.log if c == "load"] == ["chat:a"]
        await final(s.submit(chat("bye", keep_alive_s=0)))
        for _ in range(100):
            if ("unload", "chat:a") in r.log:
                break
            await asyncio.sleep(0.01)
        assert ("unload", "chat:a") in r.log and not s.residency.loaded
    run(body)


def test_a_changed_manifest_is_reloaded_before_the_next_job(run: Run, models: Path) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        await final(s.submit(chat("one")))
        manifest(models, "chat:a", capabilities=["completion"], defaults={"temperature": 0.1})  # /api/create did this
        await final(s.submit(chat("two")))
        assert [c for c, d in r.log if d == "chat:a"] == ["load", "unload", "load"]
    run(body)


def test_a_model_that_crashes_on_load_three_times_is_failed_until_an_explicit_load_works(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        r.load_errors = [RkError("runner_crashed", "died")] * 3
        for _ in range(3):
            out = await final(s.submit(chat("x")))
            assert isinstance(out, ev.Failed) and out.error.code == "runner_crashed"
        with pytest.raises(RkError) as e:
            s.submit(chat("x"))
        assert e.value.code == "model_failed"
        assert isinstance(await final(s.submit(ModelAction("chat:a", "load"))), ev.Done)
        assert isinstance(await final(s.submit(chat("works again"))), ev.Done)
    run(body)


def test_a_job_the_dead_runner_never_began_runs_on_a_fresh_one(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        r.not_begun.add("unlucky")
        t = s.submit(chat("unlucky"))
        behind = s.submit(chat("behind"))
        assert isinstance(await final(t), ev.Done)
        assert isinstance(await final(behind), ev.Done)
        assert r.restarts == 1
        assert [d for c, d in r.log if c == "run"] == ["unlucky", "unlucky", "behind"]  # kept its place
        assert [d for c, d in r.log if c == "load"] == ["chat:a", "chat:a"]  # the new runner started empty
    run(body)


def test_queue_timeout_fails_a_job_that_waited_too_long(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        gate = r.gate("hold")
        head, waiting = s.submit(chat("hold")), s.submit(chat("late"))
        out = await final(waiting)
        assert isinstance(out, ev.Failed) and out.error.code == "timeout"
        gate.set()
        assert isinstance(await final(head), ev.Done)
    run(body, queue_timeout_s=0.2)


def test_job_timeout_stops_a_job_that_runs_too_long(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        r.gate("forever and ever")
        out = await final(s.submit(chat("forever and ever")))
        assert isinstance(out, ev.Failed) and out.error.code == "timeout"
    run(body, job_timeout_s=0.2)


@pytest.mark.parametrize("job,code,words", [
    (chat("hi", tools=(Tool("f"),)), "unsupported", "chat:a does not support tools"),
    (chat("hi", think=True), "unsupported", '"chat:a" does not support thinking'),
    (chat("hi", think="high"), "unsupported", '"chat:a" does not support thinking'),
    (ChatJob("chat:a", GenSpec(messages=(Message("user", "look", images=(b"x",)),))), "unsupported", "does not support images"),
    (EmbedJob("chat:a", ("x",)), "not_embedding_model", "chat:a does not support embeddings"),
    (chat("hi", model="embed:a"), "not_chat_model", "embed:a does not support chat"),
    (EmbedJob("embed:a", ()), "empty_input", "no texts"),
    (chat("hi", model="nope:x"), "model_not_found", "no model 'nope:x'"),
])
def test_what_a_model_cannot_do_is_refused_before_queueing(run: Run, job: Any, code: str, words: str) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        with pytest.raises(RkError) as e:
            s.submit(job)
        assert e.value.code == code and words in e.value.message
        assert not s.queue.waiting and not r.log
    run(body)


def test_a_model_with_the_capabilities_takes_tools_and_thinking_and_think_false_needs_nothing(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        assert isinstance(await final(s.submit(chat("hi", model="tools:a", tools=(Tool("f"),), think="high"))), ev.Done)
        assert isinstance(await final(s.submit(chat("hi", think=False))), ev.Done)
        assert isinstance(await final(s.submit(chat("hi", tools=(Tool("f"),), tool_choice="none"))), ev.Done)
    run(body)


def test_a_chat_typed_during_a_big_embedding_job_waits_one_slice(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        r.embed_gate = asyncio.Event()
        big = s.submit(EmbedJob("embed:a", tuple(f"text {i}" for i in range(12))))
        await r.embedding.wait()  # the first slice is running
        c = s.submit(chat("quick"))
        r.embed_gate.set()
        outs = await events(big)
        assert isinstance(await final(c), ev.Done)
        order = [c for c, _ in r.log if c in ("embed", "run")]
        assert order[:2] == ["embed", "run"] and order.count("embed") == 3  # 12 texts in slices of 4
        vectors = [e for e in outs if isinstance(e, ev.Vectors)]
        assert [v.index for v in vectors] == [0, 4, 8] and isinstance(outs[-1], ev.Done)
    run(body, embed_slice=4)


def test_usage_counts_the_whole_prompt_and_reports_the_cached_part(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        out = await final(s.submit(chat("same prompt")))
        assert isinstance(out, ev.Done)
        assert (out.stats.prompt_tokens, out.stats.prefill_tokens, out.stats.cached_tokens) == (5, 3, 2)
    run(body)


def test_shutdown_refuses_waiting_jobs_with_shutting_down(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        gate = r.gate("hold")
        head, waiting = s.submit(chat("hold")), s.submit(chat("waiting"))
        await r.started["hold"].wait()
        stopping = asyncio.create_task(s.shutdown(grace_s=5.0))
        out = await final(waiting)
        assert isinstance(out, ev.Failed) and out.error.code == "shutting_down" and out.error.status == 503
        with pytest.raises(RkError) as e:
            s.submit(chat("after"))
        assert e.value.code == "shutting_down"
        gate.set()
        assert isinstance(await final(head), ev.Done)  # the running one finishes within the grace period
        await stopping
    run(body)


def test_status_is_one_typed_snapshot(run: Run) -> None:
    async def body(s: Scheduler, r: FakeRunner) -> None:
        gate = r.gate("hold")
        s.submit(chat("hold"))
        s.submit(chat("wait"))
        await r.started["hold"].wait()
        st = s.status()
        assert [j.state for j in st.queue] == ["answering", "waiting"] and st.depth == 1
        assert st.loaded[0].name == "chat:a" and st.runner.pid == 4242
        d = st.to_dict()
        assert d["totals"]["runner_restarts"] == 0 and list(d["running"]) == [st.queue[0].id]
        gate.set()
    run(body)


def test_a_larger_num_ctx_reloads_and_a_smaller_one_runs_on_the_loaded_context(run: Run, models: Path) -> None:
    manifest(models, "long:a", capabilities=["completion"], context_length=32768)
    manifest(models, "own:a", capabilities=["completion"], context_length=32768, defaults={"num_ctx": 8192})

    async def go(s: Scheduler, job: ChatJob) -> None:
        assert isinstance(await final(s.submit(job)), ev.Done)

    async def body(s: Scheduler, r: FakeRunner) -> None:
        await go(s, chat("default", model="long:a"))
        await go(s, chat("agent", model="long:a", options=GenOptions(num_ctx=16384)))
        await go(s, chat("smaller", model="long:a", options=GenOptions(num_ctx=2048)))
        await go(s, chat("default again", model="long:a"))
        assert r.contexts == [3000, 16384]  # RK_CONTEXT_LENGTH, then one reload; none for smaller needs
        assert [c for c, _ in r.log].count("unload") == 1
        assert s.status().loaded[0].num_ctx == 16384
        await go(s, chat("modelfile", model="own:a"))  # PARAMETER num_ctx 8192 in its Modelfile
        await go(s, chat("capped", model="chat:a", options=GenOptions(num_ctx=16384)))  # synthetic: its own 2048 at most
        assert r.contexts[2:] == [8192, 2048]
    run(body, context_length=3000)
