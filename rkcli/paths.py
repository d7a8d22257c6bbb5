"""Where rk lives on this machine by default: shared by the daemon and its clients (which must not import
the daemon to find it)."""
from __future__ import annotations

import os
from pathlib import Path


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/rk/rk.sock`, else `/tmp/rk-$UID/rk.sock`: a per-user private directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "rk" if runtime else Path(f"/tmp/rk-{os.getuid()}")
    return base / "rk.sock"


def default_models_dir() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "rk" / "models"
