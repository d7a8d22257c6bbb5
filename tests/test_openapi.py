"""docs/openapi.yaml is kept true: it names exactly the app's routes, and a live daemon answers as it says.

The schemathesis run targets a real daemon over TCP whose models are all synthetic; the names the
document's examples use (`smollm2:135m`, `all-minilm:l6-v2`) are registered as synthetic models so
the example requests reach the queue and produce real replies, not only 404s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import ServerError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rk.daemon.families.registry import FAMILIES
from rk.daemon.http.app import build_app
from rk.daemon.service import Service
from rk.daemon.settings import Settings

from daemon_proc import DaemonProc, start_daemon, synthetic_models, write_manifest

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def spec_operations() -> set[tuple[str, str]]:
    """(METHOD, path) for every operation in the document."""
    return {(m.upper(), path) for path, item in spec()["paths"].items() for m in item if m in HTTP_METHODS}


def app_operations(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path template) for every route of the real aiohttp app, `{id:.+}` written as `{id}`."""
    svc = Service.build(Settings.from_env({}, models_dir=tmp_path / "models", socket=tmp_path / "rk.sock", bundled=False))
    app = build_app(svc, FAMILIES)
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route!r}"
        out.add((route.method, path.replace("{id:.+}", "{id}")))
    return out


def test_spec_names_exactly_the_app_routes(tmp_path: Path) -> None:
    """Every route the app registers is documented with its method, and the document invents none.

    aiohttp adds HEAD to every GET route; the document says so once instead of listing each. A HEAD
    route of its own (`/api/blobs/{digest}`) is documented like any other.
    """
    routes = app_operations(tmp_path)
    heads = {(m, p) for m, p in routes if m == "HEAD" and ("GET", p) in routes}
    documented = spec_operations()
    assert routes - heads - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - routes == set(), "docs/openapi.yaml documents routes the app does not have"
    assert ("GET", "/metrics") in documented


def test_spec_is_valid_openapi() -> None:
    """The document parses as OpenAPI and every $ref resolves (schemathesis refuses it otherwise)."""
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert len(labels) == len(spec_operations())


# ---- schemathesis against a live daemon -----------------------------------------------------------

schema = schemathesis.openapi.from_path(SPEC_PATH)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon for the whole schemathesis run, serving the document's example names synthetically."""
    models = tmp_path_factory.mktemp("openapi-models")
    synthetic_models(models)
    write_manifest(models, "smollm2:135m", backend="synthetic", capabilities=["completion"], context_length=4096,
                   params={"tokens_per_s": 5000.0})
    write_manifest(models, "all-minilm:l6-v2", backend="synthetic", capabilities=["embedding"], context_length=512,
                   params={"dim": 32})
    d = start_daemon(tmp_path_factory.mktemp("openapi"), models_dir=models, bundled=False, tcp=True,
                     env={"RK_JOB_TIMEOUT": "20", "RK_STALL_TIMEOUT": "20"})
    deadline = time.monotonic() + 60
    while httpx.get(d.base_url + "/health").status_code != 200:  # 503 while the runner starts
        assert time.monotonic() < deadline, "the runner never started"
        time.sleep(0.05)
    yield d
    d.stop()


def not_implemented_is_fine(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except where the document promises one: 501 for `/api/create` with adapters or quantize,
    502 for a pull when the hub cannot be reached (tests have no network), 507 for a full disk."""
    try:
        return not_a_server_error(ctx, response, case)
    except ServerError:
        if (response.status_code, case.operation.path) in {(501, "/api/create"), (502, "/api/pull"),
                                                           (507, "/api/pull"), (507, "/api/blobs/{digest}")}:
            return None
        raise


CHECKS = [not_implemented_is_fine, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=15_000, suppress_health_check=list(HealthCheck), derandomize=True)
def test_live_daemon_matches_spec(case: Any, live: DaemonProc) -> None:
    """No 500s, every status, content type, header and body as documented."""
    case.call_and_validate(base_url=live.base_url, checks=CHECKS, timeout=30)
    assert live.proc.poll() is None, "the daemon died"
