"""`rk embed` over a real daemon (synthetic embedding model): records, skipped files, --resume after a kill, `| head`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

RK = str(Path(sys.executable).parent / "rk")


def make_tree(root: Path, files: int = 50, words: int = 20) -> set[str]:
    """`files` text files in nested folders plus one binary file; returns the text files' paths."""
    paths = set()
    for i in range(files):
        p = root / f"part{i % 3}" / ("deep" if i % 2 else "") / f"doc{i:02d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(" ".join(f"w{i}x{j % 400}" for j in range(words)))
        paths.add(str(p))
    (root / "part1" / "image.bin").write_bytes(bytes(range(256)) * 4)
    return paths


def env(d: Any) -> dict[str, str]:
    return dict(os.environ, RK_SOCKET=str(d.socket))


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_tree_gives_one_unit_norm_record_per_text_file(syn_daemon, tmp_path):
    expected = make_tree(tmp_path / "tree")
    r = subprocess.run([RK, "embed", "-m", "syn:embed", str(tmp_path / "tree")],
                       capture_output=True, env=env(syn_daemon), timeout=60)
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert {rec["id"] for rec in recs} == expected and len(recs) == 50
    assert all(rec["source"] == rec["id"] and rec["chunk"] == 0 and rec["model"] == "syn:embed" and rec["dim"] == 64
               for rec in recs)
    norms = np.linalg.norm(np.array([rec["embedding"] for rec in recs]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    warning = r.stderr.decode()
    assert "skipped 1 binary or not UTF-8 input" in warning and "image.bin" in warning


def test_lines_chunks_and_text(syn_daemon, tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("one two three four five\n\nsix seven\n")
    run = lambda *a: subprocess.run([RK, "embed", "-m", "syn:embed", "--include-text", *a], capture_output=True,  # noqa: E731
                                    env=env(syn_daemon), timeout=60, check=True).stdout
    by_line = [orjson.loads(x) for x in run("--lines", str(src)).splitlines()]
    assert [(r["id"], r["text"]) for r in by_line] == [(f"{src}:1", "one two three four five"), (f"{src}:3", "six seven")]
    chunks = [orjson.loads(x) for x in run("--chunk", "3", "--overlap", "1", str(src)).splitlines()]
    assert [r["text"] for r in chunks] == ["one two three", "three four five", "five\n\nsix seven"]
    assert [r["id"] for r in chunks] == [f"{src}#0", f"{src}#1", f"{src}#2"]


def test_killed_run_resumes_to_each_record_exactly_once(syn_daemon, tmp_path):
    expected = make_tree(tmp_path / "tree", words=8000)  # ~20 ms a file: time to kill it halfway
    out = tmp_path / "vectors.jsonl"
    args = [RK, "embed", "-m", "syn:embed", str(tmp_path / "tree"), "-o", str(out), "--batch", "1", "--in-flight", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(syn_daemon))
    deadline = time.monotonic() + 30
    while (not out.exists() or out.read_bytes().count(b"\n") < 5) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_bytes()
    assert 5 <= written.count(b"\n") < 50, "the run was not killed halfway"
    with open(out, "ab") as f:  # what a kill in the middle of a write would leave
        f.write(b'{"id":"torn')

    r = subprocess.run(args + ["--resume"], capture_output=True, env=env(syn_daemon), timeout=60)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data.startswith(written[:written.rindex(b"\n") + 1])  # what was there is kept
    ids = [rec["id"] for rec in records(out)]
    assert sorted(ids) == sorted(expected)  # every record, exactly once


def test_resume_needs_an_output_file(syn_daemon, tmp_path):
    r = subprocess.run([RK, "embed", "--resume", str(tmp_path)], capture_output=True, text=True, env=env(syn_daemon), timeout=30)
    assert r.returncode != 0 and "--output" in r.stderr


def test_piped_into_head_exits_quietly(syn_daemon, tmp_path):
    make_tree(tmp_path / "tree", words=2000)  # far more output than a pipe buffer holds
    cmd = f"'{RK}' embed -m syn:embed --include-text '{tmp_path / 'tree'}' | head -1; echo \"rk=${{PIPESTATUS[0]}}\" >&2"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env(syn_daemon), timeout=60)
    assert orjson.loads(r.stdout)["id"].endswith(".txt")
    assert r.stderr == "rk=141\n"  # nothing but the status: no traceback, no "Exception ignored"
