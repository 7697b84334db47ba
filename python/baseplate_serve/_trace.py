"""The trace id of the request being handled, for log records and apps.

The server sets these context variables around each request (from HTTP
X-Trace/X-Span or W3C traceparent, from THeader Trace/Span), so they are
right per request under both dispatch modes: per thread with threads, per
greenlet with gevent (every greenlet has its own context).
"""
from __future__ import annotations

import contextvars
import logging

from typing import Any

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
