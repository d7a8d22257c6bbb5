"""The one FIFO queue, over the line protocol: positions, order, cancel, many jobs per connection."""
from __future__ import annotations

from typing import Any

from rk.client import Client, DaemonError

from daemon_proc import DaemonProc


def chat(c: Client, rid: str, words: str, max_tokens: int, model: str = "syn:slow") -> str:
    return c.send("chat", rid=rid, model=model, messages=[{"role": "user", "content": words}],
                  options={"max_tokens": max_tokens})


def first_event(c: Client, rid: str) -> dict[str, Any]:
    return next(iter(c.events(rid)))


def drain(c: Client, rid: str) -> list[dict[str, Any]]:
    out = []
    try:
        for ev in c.events(rid):
            out.append(ev)
    except DaemonError as e:  # keep it as the final event
        out.append({"ev": "error", "code": e.code})
    return out


def test_five_jobs_two_connections_fifo_positions_and_cancel(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as a, syn_daemon.client() as b:
        conns = [a, b, a, b, a]
        first = {}
        for i, c in enumerate(conns, 1):
            chat(c, f"j{i}", "alpha beta gamma", 6)
            first[i] = first_event(c, f"j{i}")  # wait for 'queued' so arrival order is fixed
        assert [first[i]["position"] for i in range(1, 6)] == [1, 2, 3, 4, 5]
        job_ids = {i: first[i]["job"] for i in range(1, 6)}

        a.send("cancel", rid="k1", target="j3")
        events = {i: drain(conns[i - 1], f"j{i}") for i in range(1, 6)}
        status = a.call("status")

    assert events[3][-1] == {"ev": "error", "code": "cancelled"}
    for i in (1, 2, 4, 5):
        assert events[i][-1]["ev"] == "done", events[i]
        positions = [first[i]["position"]] + [e["position"] for e in events[i] if e["ev"] == "queued"]
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions), positions
    # jobs behind the cancelled one moved up past it
    assert 3 in [e["position"] for e in events[4] if e["ev"] == "queued"]
    assert 4 in [e["position"] for e in events[5] if e["ev"] == "queued"]
    finished = [r["id"] for r in reversed(status["recent"])]
    done_order = [job_ids[i] for i in (1, 2, 4, 5)]
    assert [j for j in finished if j in done_order] == done_order


def test_many_jobs_on_one_connection_are_multiplexed(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        for i in range(4):
            chat(c, f"m{i}", f"word{i} again", 3, model="syn:chat")
        c.send("embed", rid="e", model="syn:embed", input=["one text", "two texts"])
        texts = {}
        for i in range(4):
            evs = drain(c, f"m{i}")
            assert evs[-1]["ev"] == "done"
            texts[i] = "".join(e["text"] for e in evs if e["ev"] == "token")
        vec = [e for e in drain(c, "e") if e["ev"] == "vectors"]
    assert texts == {i: f"word{i} again " for i in range(4)}
    assert sum(len(v["embeddings"]) for v in vec) == 2


def test_cancel_running_job_and_next_starts(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        chat(c, "long", "slow words", 500)
        chat(c, "next", "fast", 2, model="syn:chat")
        for ev in c.events("long"):
            if ev["ev"] == "token":
                break
        c.send("cancel", rid="k", target="long")
        assert drain(c, "long")[-1] == {"ev": "error", "code": "cancelled"}
        assert drain(c, "next")[-1]["ev"] == "done"


def test_large_embed_job_is_sliced_so_a_chat_waits_one_slice(daemon_factory: Any) -> None:
    d = daemon_factory(env={"RK_EMBED_SLICE": "8"})
    with d.client() as c:
        c.send("embed", rid="big", model="syn:embed", input=[f"text number {i}" for i in range(80)])
        first_event(c, "big")
        chat(c, "hi", "hello there", 2, model="syn:chat")
        chat_events = drain(c, "hi")
        big = drain(c, "big")
    assert chat_events[-1]["ev"] == "done"
    vectors = [e for e in big if e["ev"] == "vectors"]
    assert sum(len(v["embeddings"]) for v in vectors) == 80
    assert [v["index"] for v in vectors] == list(range(0, 80, 8))
    # the chat finished while the embedding job still had slices to run
    assert any(e["ev"] == "queued" for e in big[1:])


def test_cancelling_a_running_embedding_job_ends_it_cancelled(daemon_factory: Any) -> None:
    d = daemon_factory(env={"RK_EMBED_SLICE": "4"})
    with d.client() as c:
        c.send("embed", rid="big", model="syn:embed", input=[f"text {i}" for i in range(400)])
        for ev in c.events("big"):
            if ev["ev"] == "vectors":
                break
        c.send("cancel", rid="k", target="big")
        rest = drain(c, "big")
        status = c.call("status")
    assert rest[-1] == {"ev": "error", "code": "cancelled"}
    assert sum(len(e["embeddings"]) for e in rest if e["ev"] == "vectors") < 396
    assert status["queue"] == []
