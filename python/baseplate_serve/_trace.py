"""The trace id of the request being handled, for log records and apps.

The server sets these context variables around each request (from HTTP
X-Trace/X-Span or W3C traceparent, from THeader Trace/Span), so they are
right per request under both dispatch modes: per thread with threads, per
greenlet with gevent (every greenlet has its own context).
"""
from __future__ import annotations

import contextvars
import logging

from typing import Any, Tuple

#: Outside a request, and for requests that carry none.
NO_TRACE = "-"

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("baseplate_serve_trace_id", default=NO_TRACE)
span_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("baseplate_serve_span_id", default=NO_TRACE)


def current_trace_id() -> str:
    """The trace id of the request being handled ("-" when there is none)."""
    return trace_id_var.get()


def current_span_id() -> str:
    """The span id of the request being handled ("-" when there is none)."""
    return span_id_var.get()


_HEX = frozenset("0123456789abcdef")


def _is_w3c(raw: str, digits: int) -> bool:
    return len(raw) == digits and set(raw) <= _HEX


def _from_decimal(raw: str, digits: int) -> str:
    # baseplate's X-Trace / Trace ids are decimal integers; OTel's B3
    # propagators read them as numbers.
    if raw.isdigit() and 0 < int(raw) < 1 << (4 * digits):
        return format(int(raw), f"0{digits}x")
    return "0"


def otel_ids(raw_trace: str, raw_span: str) -> Tuple[str, str]:
    """A request's (trace id, span id) as OpenTelemetry writes them (32 and
    16 hex digits, "0" when absent or not a number): the form of the
    ``otelTraceID`` / ``otelSpanID`` log fields. A 32-hex-digit trace id is
    W3C's (a decimal 64-bit id has at most 20 digits), and so is its span id."""
    if _is_w3c(raw_trace, 32):
        return raw_trace, raw_span if _is_w3c(raw_span, 16) else "0"
    return _from_decimal(raw_trace, 32), _from_decimal(raw_span, 16)


def install_record_factory() -> None:
    """Gives every log record ``trace_id`` and ``span_id`` attributes, so any
    formatter (ours, or one from the INI file) can use ``%(trace_id)s``."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_baseplate_serve", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.trace_id = trace_id_var.get()
        record.span_id = span_id_var.get()
        return record

    factory._baseplate_serve = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
