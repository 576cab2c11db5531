"""OpenTelemetry spans behind OTEL_ENABLED (default off), exported over OTLP/HTTP.

The W3C trace context in dal.trace_context stays the one source of truth: a span continues the
traceparent in hand and, while it is open, the traceparent names the span. So log lines carry
the span id, a job published inside a span carries it to the worker, and with tracing off
nothing changes but the absence of spans. The OpenTelemetry packages (the `otel` extra) are
imported only when tracing is turned on.

The exporter reads the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_HEADERS; the sampler OTEL_TRACES_SAMPLER
(default: follow the caller's sampled flag, sample new traces).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dal.settings import Settings
from dal.trace_context import current_traceparent, set_traceparent

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float


class SpanHandle(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def update_name(self, name: str) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None


_NO_SPAN = _NoSpan()


@dataclass(frozen=True)
class Tracing:
    tracer: Any
    provider: Any

    def shutdown(self) -> None:
        self.provider.shutdown()


_active: Tracing | None = None


def configure_tracing(
    settings: Settings, *, service_name: str, exporter: Any = None
) -> Tracing | None:
    """Turn spans on for this process when OTEL_ENABLED; returns None when off. `exporter`
    (a SpanExporter) replaces OTLP and is flushed span by span (tests)."""
    global _active
    if not settings.otel_enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Our own provider, not the global one: a process (or a test) can turn tracing off again.
    _active = Tracing(tracer=provider.get_tracer("txt2img"), provider=provider)
    return _active


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at process exit)."""
    global _active
    tracing, _active = _active, None
    if tracing is not None:
        tracing.shutdown()


def _parent_context(traceparent: str | None) -> Any:
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return Context()  # a new trace, not whatever this thread ran before
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _links(traceparents: Sequence[str]) -> list[Any]:
    from opentelemetry import trace

    links = []
    for traceparent in traceparents:
        context = trace.get_current_span(_parent_context(traceparent)).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context))
    return links


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = "internal",
    attributes: Mapping[str, AttributeValue] | None = None,
    links: Sequence[str] = (),
) -> Iterator[SpanHandle]:
    """A span, child of the traceparent in hand, that becomes the traceparent in hand while
    the block runs. `links`: traceparents of other work this span serves (batch mates)."""
    tracing = _active
    if tracing is None:
        yield _NO_SPAN
        return
    from opentelemetry import trace

    previous = current_traceparent()
    with tracing.tracer.start_as_current_span(
        name,
        context=_parent_context(previous),
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=dict(attributes or {}),
        links=_links(links),
    ) as opened:
        context = opened.get_span_context()
        set_traceparent(
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        )
        try:
            yield opened
        finally:
            set_traceparent(previous)
