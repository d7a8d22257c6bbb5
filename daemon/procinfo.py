"""Process figures from /proc, shared by the daemon (the runner's footprint) and backends (their own)."""
from __future__ import annotations


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MiB (VmRSS), or 0.0 where /proc is missing or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
