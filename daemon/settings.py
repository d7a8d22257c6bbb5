"""Daemon settings: one frozen object with defaults, `RK_*` environment overrides and a help line each.

The CLI only overrides fields; the daemon receives a `Settings`, never a CLI context.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rk.paths import default_models_dir, default_socket_path

REPACK_SETTINGS = ("auto", "on", "off")  # RK_LLAMA_REPACK's values (backends/cpufeatures.py applies them)


def _opt(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    socket: Path = _opt(None, "RK_SOCKET", "Unix socket path (default $XDG_RUNTIME_DIR/rk/rk.sock or /tmp/rk-$UID/rk.sock)")
    tcp: str | None = _opt(None, "RK_TCP", "also listen on TCP [HOST:]PORT; a bare port binds 127.0.0.1")
    socket_group: str | None = _opt(None, "RK_SOCKET_GROUP", "group allowed to use the socket (mode 0660 instead of 0600)")
    models_dir: Path = _opt(None, "RK_MODELS", "models directory")
    api_key: str | None = _opt(None, "RK_API_KEY", "API key required on TCP (Authorization: Bearer KEY)")
    cors_origins: str = _opt("", "RK_ORIGINS", "comma-separated extra origins whose web pages may call the API (like "
                             "OLLAMA_ORIGINS; local pages always may), '*' for any")
    hosts: str = _opt("", "RK_HOSTS", "comma-separated extra Host names accepted on keyless TCP (IP addresses, localhost and "
                      "this machine's name always are), '*' for any")
    max_queue: int = _opt(512, "RK_MAX_QUEUE", "jobs that may wait at once; more get queue_full")
    max_body_bytes: int = _opt(8 * 1024 * 1024, "RK_MAX_BODY", "largest HTTP body or protocol line, bytes")
    queue_timeout_s: float = _opt(0.0, "RK_QUEUE_TIMEOUT", "longest a job may wait in the queue, seconds (0 = no limit)")
    job_timeout_s: float = _opt(0.0, "RK_JOB_TIMEOUT", "longest a job may run, seconds (0 = no limit)")
    stall_timeout_s: float = _opt(300.0, "RK_STALL_TIMEOUT", "a runner silent this long while busy is killed (timeout)")
    header_timeout_s: float = _opt(10.0, "RK_HEADER_TIMEOUT",
                                   "a connection that sends no complete request in this time is closed")
    body_timeout_s: float = _opt(60.0, "RK_BODY_TIMEOUT", "an HTTP request body not complete in this many seconds is answered "
                                 "408 and closed")
    idle_timeout_s: float = _opt(300.0, "RK_IDLE_TIMEOUT", "an idle keep-alive connection is closed after this many seconds")
    keep_alive_s: float = _opt(300.0, "RK_KEEP_ALIVE", "how long an idle model stays loaded, seconds (negative = forever)")
    client_backlog: int = _opt(1024, "RK_CLIENT_BACKLOG", "events a job may hold for a client that is not reading")
    slow_client_grace_s: float = _opt(10.0, "RK_SLOW_CLIENT_GRACE", "how long a client may stay over that backlog before its job "
                                      "is stopped (slow_client)")
    embed_slice: int = _opt(64, "RK_EMBED_SLICE", "texts an embed job runs before going back to the queue tail")
    embed_batch_tokens: int = _opt(8192, "RK_EMBED_BATCH_TOKENS", "token budget of one merged embedding batch")
    shutdown_grace_s: float = _opt(10.0, "RK_SHUTDOWN_GRACE", "on SIGTERM, how long the running job may finish")
    context_length: int = _opt(4096, "RK_CONTEXT_LENGTH", "context (KV cache) a chat model loads with, tokens, unless the "
                               "request's options.num_ctx or the model's PARAMETER num_ctx sets one (capped at the model's own)")
    threads: int = _opt(0, "RK_THREADS", "CPU threads for the hf and llamacpp backends (0 = auto: llamacpp takes the physical "
                        "big cores, hf all cores)")
    llama_repack: str = _opt("auto", "RK_LLAMA_REPACK", "llama.cpp weight repack: auto (off on CPUs with AMX, where it crashes; "
                             "on elsewhere), on, off")
    rkllm_lib: str | None = _opt(None, "RK_RKLLM_LIB", "path of librkllmrt.so (default: the loader path)")
    rkllm_version: str | None = _opt(None, "RK_RKLLM_VERSION", "force the RKLLM runtime ABI: 1.2 or 1.3")
    sysfs_root: Path = _opt(Path("/"), "RK_SYSFS_ROOT",
                            "root under which /sys and /proc are read (tests point it at a fake tree)")
    default_chat_model: str = _opt("smollm2:135m", "RK_CHAT_MODEL", "model used when a chat names none")
    default_embed_model: str = _opt("all-minilm:l6-v2", "RK_EMBED_MODEL", "model used when an embedding names none")
    bundled: bool = _opt(True, "RK_BUNDLED", "register the bundled default models")
    agent_port: str | None = _opt(None, "RK_AGENT_PORT", "HAProxy agent-check responder on [HOST:]PORT (a bare port binds "
                                  "127.0.0.1): replies 'ready up N%', 'drain' or 'down#why'")
    metrics_public: bool = _opt(False, "RK_METRICS_PUBLIC", "serve /metrics without the API key (for Prometheus and gateway "
                                "scrapers, which cannot send one)")
    metrics_compat: str = _opt("", "RK_METRICS_COMPAT",
                               "also emit another engine's gauge names for gateways that expect them: 'vllm'")
    queue_full_status: int = _opt(503, "RK_QUEUE_FULL_STATUS", "HTTP status of a full queue, with Retry-After: 503 (like Ollama) "
                                  "or 429 (routers such as LiteLLM cool down on it)")
    client_max_jobs: int = _opt(0, "RK_CLIENT_MAX_JOBS", "jobs one client (API key, else address, else Unix user) may have "
                                "waiting or running; more get 429 (0 = no cap)")
    quiet: bool = _opt(False, "RK_QUIET", "no access log (one line per HTTP request and per line-protocol job)")

    def __post_init__(self) -> None:
        if self.socket is None:
            object.__setattr__(self, "socket", default_socket_path())
        if self.models_dir is None:
            object.__setattr__(self, "models_dir", default_models_dir())
        if self.llama_repack not in REPACK_SETTINGS:
            raise ValueError(f"RK_LLAMA_REPACK must be one of {', '.join(REPACK_SETTINGS)}, not {self.llama_repack!r}")
        for f in dataclasses.fields(self):  # "nan" or "inf" would make a timeout that never ends
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.metadata['env']} must be a finite number, not {value!r}")
        if self.queue_full_status not in (429, 503):
            raise ValueError(f"RK_QUEUE_FULL_STATUS must be 429 or 503, not {self.queue_full_status}")
        if self.metrics_compat not in ("", "vllm"):
            raise ValueError(f"RK_METRICS_COMPAT must be 'vllm' or empty, not {self.metrics_compat!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `RK_*` variables, then explicit overrides (the CLI's flags) that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw != "":
                try:
                    values[f.name] = _parse(f, raw)
                except ValueError:
                    raise ValueError(f"{f.metadata['env']} must be {_KINDS.get(str(f.type), 'a value')}, "
                                     f"not {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(field, env var, help) for every setting, for docs and `rk serve --help`."""
        return [(f.name, f.metadata["env"], f.metadata["help"]) for f in dataclasses.fields(cls)]


_KINDS = {"int": "a whole number", "float": "a number"}


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = str(f.type)
    if "bool" in kind:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if "Path" in kind:
        return Path(raw).expanduser()
    return raw


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[V6]:PORT` -> (host, port); a bare port means loopback."""
    value = value.strip()
    if value.isdigit():
        return default_host, int(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected [HOST:]PORT, got {value!r}")
    return host.strip("[]") or default_host, int(port)
