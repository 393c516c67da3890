"""Tracing and logging set-up, configured by the standard OTEL_* variables.

Spans are exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-specific
variable) is set; propagation (W3C trace context) works either way, so trace ids still flow
through Kafka headers and into the logs.
"""

from __future__ import annotations

import logging
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pythonjsonlogger.json import JsonFormatter


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


class _TraceIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


def configure_logging(service_name: str, level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_TraceIds())
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
