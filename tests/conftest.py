"""Fixtures: real daemons on temporary sockets, with the synthetic backend or the bundled real models."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from daemon_proc import DaemonProc, hf_smollm_model, start_daemon, synthetic_models
from tool_models import tool_models


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProc]]:
    """Start daemons with `daemon_factory(**start_daemon kwargs)`; all are stopped at the end of the test."""
    started: list[DaemonProc] = []

    def make(**kw: object) -> DaemonProc:
        kw.setdefault("bundled", False)
        models = kw.pop("models_dir", None) or tmp_path / "models"
        synthetic_models(Path(models))
        d = start_daemon(tmp_path / f"d{len(started)}", models_dir=Path(models), **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def syn_daemon(daemon_factory: Callable[..., DaemonProc]) -> DaemonProc:
    """A daemon with only synthetic models, Unix socket and TCP: fast, for queue and protocol tests."""
    return daemon_factory(tcp=True)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[DaemonProc]:
    """One synthetic daemon (Unix socket + TCP) shared by a module's many small, read-only cases."""
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    synthetic_models(tmp / "models")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def real_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models dir per test session, so the bundled chat model is converted from GGUF only once."""
    return tmp_path_factory.mktemp("real-models")


@pytest.fixture(scope="session")
def real_daemon(tmp_path_factory: pytest.TempPathFactory, real_models_dir: Path) -> Iterator[DaemonProc]:
    """A daemon serving the bundled default models (smollm2:135m on llama.cpp, all-minilm:l6-v2 on hf), plus
    the same SmolLM2 on the hf backend (`smollm2-hf:135m`) and the synthetic models, shared by a session."""
    d = start_daemon(tmp_path_factory.mktemp("real"), models_dir=real_models_dir, bundled=True, tcp=True)
    synthetic_models(real_models_dir)
    hf_smollm_model(real_models_dir)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def tools_daemon(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[DaemonProc]:
    """A daemon serving the scripted tool-calling and thinking test models (tests/tool_models.py), per module."""
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    tool_models(tmp / "models", tmp / "gate")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def agents_daemon(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[DaemonProc]:
    """The scripted tool models and the synthetic ones on TCP with the API key `sekret`, per module: for the
    coding agents' APIs (Messages, Responses)."""
    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    tool_models(tmp / "models", tmp / "gate")
    synthetic_models(tmp / "models")
    d = start_daemon(tmp, models_dir=tmp / "models", bundled=False, tcp=True, env={"RK_API_KEY": "sekret"})
    yield d
    d.stop()
