"""Tracing and logging set-up, configured by the standard OTEL_* variables.

Spans are exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific
variable) is set; propagation (W3C trace context) works either way, so trace ids still flow
through Kafka headers and into the logs. Outgoing httpx calls (webhooks) are client spans of
whatever span is current, and carry `traceparent` to the receiver.

Logs never carry personal data: the access log (client addresses) is off, and a filter masks
e-mail addresses and IP addresses in any message that slips one in. A library's repeated lines
are thinned (`QuietRepeats`), ours never.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import sys

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.json import JsonFormatter
from token_bucket import Limiter, MemoryStorage


def configure_tracing(service_name: str) -> None:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # already configured in this process (tests run several services in one)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


class _TraceIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Candidates only; ipaddress decides, so times ("12:30:45") and versions stay as they are.
_IPV4_CANDIDATE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])[0-9A-Fa-f]*:[0-9A-Fa-f:]*(?![\w:])")
# Loopback and unspecified addresses name no one, and bind/connect messages need them.
_HARMLESS_IPS = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::"})  # noqa: S104


def _mask_ip(match: re.Match[str]) -> str:
    token = match.group(0)
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return token
    return token if token in _HARMLESS_IPS else "<ip>"


def scrub(text: str) -> str:
    """Mask e-mail and IP addresses (personal data) in a log message."""
    text = _EMAIL.sub("<email>", text)
    return _IPV6_CANDIDATE.sub(_mask_ip, _IPV4_CANDIDATE.sub(_mask_ip, text))


class _ScrubPersonalData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class QuietRepeats(logging.Filter):
    """A library's repeated lines pass `burst` at once, then `per_second` for each (logger,
    message), and the next one to pass says how many like it were left out. aiokafka logs every
    failed connection to a broker that is away: about 200,000 lines a minute per service in a
    60 s broker outage (tests/chaos/test_outages.py), 89 MB of logs that buried everything
    else. Buckets per line by the `token-bucket` library, as the API's rate limits."""

    _MAX_KEYS = 1000  # distinct lines remembered; past it all are forgotten (a fresh burst each)

    def __init__(
        self, loggers: tuple[str, ...] = ("aiokafka",), per_second: float = 0.1, burst: int = 5
    ) -> None:
        super().__init__()
        self._loggers = loggers
        self._children = tuple(name + "." for name in loggers)
        self._rate, self._burst = per_second, burst
        self._limiter = Limiter(per_second, burst, MemoryStorage())
        self._left_out: dict[str, int] = {}
        self._keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name in self._loggers or record.name.startswith(self._children)):
            return True
        key = f"{record.name}\0{record.msg}"
        if key not in self._keys and len(self._keys) >= self._MAX_KEYS:
            self._limiter = Limiter(self._rate, self._burst, MemoryStorage())
            self._keys.clear()
            self._left_out.clear()
        self._keys.add(key)
        if not self._limiter.consume(key):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        left_out = self._left_out.pop(key, 0)
        if left_out:
            record.msg, record.args = f"{record.getMessage()} ({left_out} like it left out)", None
        return True


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout, where a line the stream can no longer take is dropped once the stream is
    closed: a test runner closes the stdout it swapped in, and a library's exit hook logging
    after that (pgserver's) printed a "Logging error ... I/O operation on closed file"
    traceback into every CI run's output. A closed stream's lines have nowhere to go."""

    def handleError(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "closed", False):
            return
        super().handleError(record)


def configure_logging(service_name: str, level: str, as_json: bool) -> None:
    handler = _Stdout(sys.stdout)
    handler.addFilter(QuietRepeats())
    handler.addFilter(_TraceIds())
    handler.addFilter(_ScrubPersonalData())
    if as_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
                rename_fields={"levelname": "level", "asctime": "time"},
                static_fields={"service": service_name},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about group joins; keep it to warnings.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
