"""Run the benchmarks, print one table, write `bench/results/<timestamp>.json`.

`python -m bench [--quick] [--only NAME ...]` from the repository root.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import BENCH, Context, Row, table

BENCHES = {  # name -> module; run in this order
    "streaming": "bench.b_streaming",
    "overhead": "bench.b_overhead",
    "idle_gap": "bench.b_idle_gap",
    "embed": "bench.b_embed",
    "multiturn": "bench.b_multiturn",
    "startup": "bench.b_startup",
    "decode": "bench.b_decode",
    "npu_reuse": "bench.b_npu_reuse",
    "fresh": "bench.b_fresh",
    "multiboard": "bench.b_multiboard",
    "agents": "bench.b_agents",
}


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram, 1), "python": platform.python_version(),
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations and texts (a smoke run, noisier)")
    ap.add_argument("--only", action="append", choices=list(BENCHES), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHES)}")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="CPU threads for the backends and the in-process baselines alike (RK_THREADS; default: torch all cores, "
                         "llama.cpp the physical big cores)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        os.environ["RK_THREADS"] = str(args.threads)  # inherited by every daemon this run starts
    names = args.only or list(BENCHES)
    rows: list[Row] = []
    failed: dict[str, str] = {}
    t_all = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmp:
        ctx = Context(quick=args.quick, tmp=Path(tmp))
        for name in names:
            t0 = time.perf_counter()
            print(f"== {name} ...", file=sys.stderr, flush=True)
            try:
                got = importlib.import_module(BENCHES[name]).run(ctx)
            except Exception as e:  # noqa: BLE001 - a benchmark may raise anything; one broken one must not lose the others' figures
                traceback.print_exc()
                failed[name] = f"{type(e).__name__}: {e}"
                continue
            rows += got
            print(table(got), file=sys.stderr)
            print(f"== {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    info = machine() | {"load_before": load_before, "load_after": os.getloadavg(),
                        "threads": os.environ.get("RK_THREADS") or "all cores"}
    print(f"\nrk bench{' --quick' if args.quick else ''} · {info['nproc']} × {info['cpu']} · {info['ram_gb']} GB RAM "
          f"· Python {info['python']} · torch threads: {info['threads']} · load avg {load_before[0]:.1f} "
          f"→ {info['load_after'][0]:.1f} · {time.perf_counter() - t_all:.0f} s\n")
    print(table(rows))
    for name, why in failed.items():
        print(f"\n!! {name} failed: {why}")
    out = BENCH / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps({"machine": info, "quick": args.quick, "rows": [r.__dict__ for r in rows],
                                  "raw": ctx.extra, "failed": failed}, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"\nwrote {out.relative_to(BENCH.parent)}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
