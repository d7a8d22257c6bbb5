"""The `watch` op against a real daemon: snapshots to many watchers, rate-limited, never slowed by one that stalls."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from rk.client import Client

from daemon_proc import DaemonProc

SLOW = {"model": "syn:slow", "messages": [{"role": "user", "content": "word " * 50}], "options": {"max_tokens": 4000}}


def snapshots_for(c: Client, seconds: float) -> list[dict]:
    """Snapshots a watcher on `c` receives in `seconds` (after the first one)."""
    rid = c.send("watch")
    first = c.read()
    assert first["id"] == rid and first["ev"] == "snapshot"
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.append(c.read())
    return got


WATCHES_PER_STUCK = 20


def stalled_watcher(d: DaemonProc, tcp: bool) -> socket.socket:
    """A connection that asks for many watch streams and never reads: its buffers fill within a second."""
    if tcp:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(("127.0.0.1", d.tcp_port))
    else:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.socket))
    s.sendall(b"".join(b'{"id":"stuck%d","op":"watch"}\n' % i for i in range(WATCHES_PER_STUCK)))
    return s


def run_quick_jobs(c: Client, n: int) -> list[dict]:
    rids = [c.send("chat", model="syn:chat", messages=[{"role": "user", "content": f"job {i} " * 20}],
                   options={"max_tokens": 40}) for i in range(n)]
    return [list(c.events(rid))[-1]["stats"] for rid in rids]


def test_stalled_watchers_do_not_delay_jobs(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        run_quick_jobs(c, 20)  # a full `recent` list: every snapshot is several KB from now on
    t0 = time.monotonic()
    stuck = [stalled_watcher(syn_daemon, tcp=True), stalled_watcher(syn_daemon, tcp=False)]
    with syn_daemon.client() as busy:
        busy.send("chat", rid="busy", **SLOW)  # 20 tok/s: a change, so a snapshot, every 50 ms
        time.sleep(2.0)  # the stuck connections' buffers fill up meanwhile
        busy.send("cancel", target="busy")
    with syn_daemon.client() as c:
        t1 = time.monotonic()
        stats = run_quick_jobs(c, 20)
        elapsed = time.monotonic() - t1
    assert elapsed < 15.0, f"20 short jobs took {elapsed:.1f} s with stalled watchers"  # ~1 s unloaded; a stall is 300 s
    assert all(s["generate_tokens"] > 0 for s in stats)
    with syn_daemon.client() as healthy:  # the daemon still serves watchers that read
        assert len(snapshots_for(healthy, 1.5)) >= 1
    for s in stuck:  # what a stalled watcher holds is bounded by the snapshot rate, never a backlog of every change
        s.setblocking(False)
        data = b""
        for _ in range(10_000):  # bounded: the daemon refills what we drain, at its rate limit, for as long as we read
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        full_rate = WATCHES_PER_STUCK * 10 * (time.monotonic() - t0)  # every watch at 10/s since the start
        assert data.startswith(b'{"id":"stuck') and 0 < data.count(b"\n") <= full_rate
        s.close()


def test_several_watchers_rate_limit_and_heartbeat(syn_daemon: DaemonProc) -> None:
    clients = [syn_daemon.client() for _ in range(3)]
    idle = snapshots_for(clients[0], 2.5)
    assert 1 <= len(idle) <= 4, f"{len(idle)} heartbeats in 2.5 s of idleness"
    with syn_daemon.client() as busy:
        busy.send("chat", rid="busy", **SLOW)  # 20 token events/s: more changes than the 10/s limit
        time.sleep(0.3)
        for c in clients[1:]:
            c.send("watch", rid="w")
            c.read()
        start = time.time()
        counts = []
        for c in clients[1:]:  # counted by the daemon's clock in each snapshot, so reading in turn is fair
            times: list[float] = []
            while not times or times[-1] < start + 2.0:
                ev = c.read()
                assert ev["ev"] == "snapshot" and ev["queue"][0]["state"] in ("prefill", "generating", "answering")
                times.append(ev["host"]["time"])
            counts.append(sum(start <= t < start + 2.0 for t in times))
        assert all(1 <= n <= 24 for n in counts), counts  # at most ~10/s (the limit); fewer only on a loaded box
        busy.send("cancel", target="busy")
    for c in clients:
        c.close()


def test_top_once_prints_the_queue_without_textual(syn_daemon: DaemonProc) -> None:
    with syn_daemon.client() as c:
        jobs = [next(c.events(c.send("chat", rid=f"a{i}", **SLOW)))["job"] for i in range(3)]
        code = ("import sys\nfrom rk.app import app\n"
                f"try:\n    app(['--socket', {str(syn_daemon.socket)!r}, 'top', '--once'], standalone_mode=False)\n"
                "finally:\n    print('textual imported' if 'textual' in sys.modules else 'textual not imported')\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, COLUMNS="100"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rows = [ln.split() for ln in lines if len(ln.split()) > 2 and ln.split()[1] in jobs]  # "#  job  model ..."
    assert [r[0] for r in rows] == ["▶", "2", "3"] and [r[1] for r in rows] == jobs  # in position order
    assert {"loading", "prefill", "generating", "answering"} & set(rows[0]) and "waiting" in rows[1] and "waiting" in rows[2]
    assert lines[-1] == "textual not imported"


def test_top_once_without_a_daemon_says_so(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "rk", "--socket", str(tmp_path / "none.sock"), "top", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "rk serve" in out.stderr and "Traceback" not in out.stderr
