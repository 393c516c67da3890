"""Unit tests of what every service gets from servicekit for operations: per-app request metrics
(several apps in one process), the route index giving the same templates as the instrumentator's
own lookup, and the log filter that keeps personal data out of logs. No infrastructure."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fastapi_instrumentator import routing as upstream
from starlette.requests import Request

from notification_service import metrics as _notification_metrics  # noqa: F401  (a domain counter in the default registry)
from servicekit.app import create_service_app
from servicekit.metrics import RouteIndexedMetricsMiddleware
from servicekit.runtime import ServiceSpec
from servicekit.settings import ServiceSettings
from servicekit.telemetry import QuietRepeats, configure_logging, scrub


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/programs")
    async def programs() -> list[str]:
        return []

    @router.get("/v1/programs/{program_id}")
    async def program(program_id: str) -> dict[str, str]:
        return {"id": program_id}

    @router.post("/v1/programs/{program_id}/advocates")
    async def enroll(program_id: str) -> dict[str, str]:
        return {"id": program_id}

    @router.get("/r/{code}")
    async def redirect(code: str) -> dict[str, str]:
        return {"code": code}

    @router.get("/{anything}/raw")
    async def catch_all(anything: str) -> dict[str, str]:
        return {"x": anything}

    return router


def _app(name: str) -> FastAPI:
    spec = ServiceSpec(name=name, schema=name.replace("-", "_"), package=name)
    return create_service_app(spec, ServiceSettings(), [_router()])


def _samples(app: FastAPI, metric: str) -> dict[tuple[str, str, str], float]:
    text = app.state.metrics.exposition().decode()
    return {
        (s.labels["handler"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric
    }


def test_two_services_in_one_process_each_count_their_own_requests() -> None:
    link, other = _app("link-service"), _app("link-service")  # same names: no clash
    # Without `with`: no lifespan, so no runtime (Postgres, Kafka); these routes need none.
    a, b = TestClient(link), TestClient(other)
    for _ in range(3):
        assert a.get("/v1/programs/p_1").status_code == 200
    assert b.get("/r/ABCD1234").status_code == 200
    assert a.get("/nowhere").status_code == 404
    assert a.get("/healthz").status_code == 200
    assert a.get("/metrics").status_code == 200
    assert _samples(link, "http_requests_total") == {
        ("/v1/programs/{program_id}", "GET", "2xx"): 3.0,
        ("none", "GET", "4xx"): 1.0,  # unknown paths fold into one series; probes not counted
    }
    assert _samples(other, "http_requests_total") == {("/r/{code}", "GET", "2xx"): 1.0}
    assert (
        _samples(link, "http_request_duration_seconds_count")[
            ("/v1/programs/{program_id}", "GET", "2xx")
        ]
        == 3.0
    )
    text = link.state.metrics.exposition().decode()
    assert 'referral_webhook_attempts_total{outcome="failed"} 0.0' in text  # exists before use
    assert 'referral_service_info{service="link-service",version="0.1.0"} 1.0' in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/programs"),
        ("GET", "/v1/programs/p_1"),
        ("POST", "/v1/programs/p_1/advocates"),
        ("GET", "/v1/programs/p_1/advocates"),  # method mismatch: partial match
        ("GET", "/r/ABCD"),
        ("GET", "/r/ABCD/extra"),
        ("GET", "/foo/raw"),
        ("GET", "/healthz"),
        ("GET", "/"),
        ("GET", "/v1/nothing/here"),
    ],
)
def test_route_index_resolves_like_the_instrumentator(method: str, path: str) -> None:
    app = _app("svc")
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "app": app}
    scope |= {"headers": [], "query_string": b""}
    middleware = RouteIndexedMetricsMiddleware.__new__(RouteIndexedMetricsMiddleware)
    middleware.should_include_root_path = False
    expected = upstream.get_route_name(Request(scope), should_include_root_path=False)
    assert middleware._get_handler(Request(scope)) == (expected or path, expected is not None)


def test_logs_mask_emails_and_ip_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    assert scrub("from 203.0.113.7:5514 and 2001:db8::1") == "from <ip>:5514 and <ip>"
    assert (
        scrub("bind 127.0.0.1:8001 at 12:30:45, v1.2.3")
        == "bind 127.0.0.1:8001 at 12:30:45, v1.2.3"
    )
    assert scrub("Key (email)=(ann.b+x@example.co.uk) exists") == "Key (email)=(<email>) exists"
    configure_logging("svc", "INFO", as_json=True)
    log = logging.getLogger("test")
    log.info("enrolled %s from %s", "ann@example.com", "198.51.100.4")
    try:
        raise ValueError("duplicate ann@example.com")
    except ValueError:
        log.exception("failed for 198.51.100.4")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["message"] == "enrolled <email> from <ip>"
    assert lines[0]["service"] == "svc" and "trace_id" in lines[0]
    assert "ann@example.com" not in json.dumps(lines) and "198.51.100.4" not in json.dumps(lines)
    assert "duplicate <email>" in lines[1]["exc_info"]


def test_a_librarys_repeated_lines_are_thinned_and_say_how_many_were_left_out() -> None:
    """aiokafka logs each failed connect to an absent broker: a burst passes, then one line
    per interval naming how many like it were left out; other lines and our own pass whole."""
    import time

    quiet = QuietRepeats(per_second=20, burst=3)

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    lines = [
        record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, i) for i in range(500)
    ]
    passed = [r for r in lines if quiet.filter(r)]
    assert 3 <= len(passed) <= 6  # the burst, and what the rate refilled meanwhile
    other = record("aiokafka.client", "Unable to update metadata from [1]")
    assert quiet.filter(other)  # another line has its own bucket
    ours = [record("referral_events.inbox", "consumer x: database unavailable") for _ in range(50)]
    assert all(quiet.filter(r) for r in ours)  # our own lines are never thinned
    time.sleep(0.2)
    later = record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, "again")
    assert quiet.filter(later)
    said = later.getMessage()
    assert said.startswith("Unable connect to node with id 1: again (")
    assert f"({500 - len(passed)} like it left out)" in said


def test_a_line_logged_after_stdout_was_closed_is_dropped_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test runner closes the stdout it swapped in; a line logged after that (a library's exit
    hook) has nowhere to go and is dropped, without logging's error traceback on stderr."""
    import io

    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    configure_logging("svc", "INFO", as_json=False)
    log = logging.getLogger("test.closed")
    log.info("one")
    assert out.getvalue().rstrip().endswith("INFO test.closed one")
    out.close()
    monkeypatch.setattr(logging, "raiseExceptions", True)
    log.info("two")
    assert "Logging error" not in capsys.readouterr().err
