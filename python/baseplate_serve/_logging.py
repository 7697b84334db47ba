"""Default logging: the root logger to stdout, or the INI file's own setup.

The format follows baseplate.py 2.7's ``configure_logging``: JSON lines (its
``CustomJsonFormatter`` fields) when stdin is not a TTY, text on a TTY.
``BASEPLATE_SERVE_LOG_FORMAT`` (``auto``, ``json``, ``text``) forces one.
"""
from __future__ import annotations

import logging
import logging.config
import os
import sys
import warnings

from typing import Any, Dict, Optional

from baseplate_serve._errors import StartupError
from baseplate_serve._trace import (
    NO_TRACE,
    install_record_factory,
    otel_ids,
    span_id_var,
    trace_id_var,
)

#: Time, level, process id, the request's trace id ("-" outside one), logger, message.
DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] [%(trace_id)s] %(name)s: %(message)s"

#: The fields baseplate.py 2.7 asks its JSON formatter for (``levelname`` is
#: written as ``level``); the OTel ``otel*`` fields and ``traceID`` are added.
JSON_FIELDS = (
    "%(levelname)s %(message)s %(funcName)s %(lineno)d %(module)s %(name)s %(pathname)s"
    " %(process)d %(processName)s %(thread)d %(threadName)s"
)

#: ``pathname`` (and ``module``) of the core's records.
NATIVE_PATH = "<native>"

#: Environment variable that forces the format of the default setup.
FORMAT_VARIABLE = "BASEPLATE_SERVE_LOG_FORMAT"


def _json_formatter_class() -> Any:
    try:  # python-json-logger >= 3.1
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        try:  # 2.x, which baseplate.py 2.7 pins (< 3.0)
            from pythonjsonlogger.jsonlogger import JsonFormatter
        except ImportError as exc:
            raise StartupError(
                f"JSON logs need python-json-logger ({exc}); install it, or set {FORMAT_VARIABLE}=text"
            ) from None
    return JsonFormatter


def make_json_formatter() -> logging.Formatter:
    """A JSON formatter writing the fields baseplate.py 2.7's writes."""
    base = _json_formatter_class()

    class JsonFormatter(base):  # type: ignore[misc, valid-type]
        """baseplate.py's ``CustomJsonFormatter`` plus the OTel fields for
        records written outside the app's span (ours, the core's): they
        carry the ids of the request, in OTel's hex form."""

        def add_fields(self, log_record: Dict[str, Any], record: logging.LogRecord, message_dict: Dict[str, Any]) -> None:
            super().add_fields(log_record, record, message_dict)
            raw_trace = log_record.pop("trace_id", NO_TRACE)
            raw_span = log_record.pop("span_id", NO_TRACE)
            log_record["level"] = log_record.pop("levelname", None)
            if log_record.get("otelTraceID", "0") == "0":
                # No OTel span (no baseplate.py, or a record written outside
                # the app): the request's own ids.
                trace, span = otel_ids(raw_trace, raw_span)
                log_record["otelTraceID"] = trace
                log_record["otelSpanID"] = span
                log_record.setdefault("otelTraceSampled", False)
                log_record.setdefault("otelServiceName", "")
                if raw_trace != NO_TRACE:
                    log_record["traceID"] = trace if trace != "0" else raw_trace
            else:
                log_record["traceID"] = log_record["otelTraceID"]

    return JsonFormatter(JSON_FIELDS)


def log_format(environ: Optional[Dict[str, str]] = None) -> str:
    """``json`` or ``text``: forced by BASEPLATE_SERVE_LOG_FORMAT, else as
    baseplate.py chooses (JSON unless stdin is a TTY)."""
    environ = os.environ if environ is None else environ
    forced = environ.get(FORMAT_VARIABLE, "auto").strip().lower() or "auto"
    if forced not in ("auto", "json", "text"):
        raise StartupError(f"{FORMAT_VARIABLE}={forced!r}: expected auto, json or text")
    if forced != "auto":
        return forced
    stdin = sys.stdin
    try:
        tty = stdin is not None and stdin.isatty()
    except ValueError:  # closed
        tty = False
    return "text" if tty else "json"


def configure_logging(filename: str, has_logging_options: bool, debug: bool) -> None:
    """Root logger at INFO (DEBUG with ``--debug``) printing to stdout;
    a ``[loggers]`` section hands the setup to ``logging.config.fileConfig``."""
    install_record_factory()
    logging.captureWarnings(True)
    level = logging.DEBUG if debug else logging.INFO
    if debug:
        warnings.simplefilter("always")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_json_formatter() if log_format() == "json" else logging.Formatter(DEFAULT_FORMAT))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    if has_logging_options:
        logging.config.fileConfig(filename, disable_existing_loggers=False)
        if debug:
            root.setLevel(logging.DEBUG)


def emit_native(records: list) -> None:
    """Writes the records the native core queued, (level, logger, message,
    trace id), through Python's logging: same handlers, same format."""
    for level, name, message, trace_id in records:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            token = trace_id_var.set(trace_id)
            span_token = span_id_var.set(NO_TRACE)
            try:
                # Not this function's file and line: the record comes from C++.
                logger.handle(logger.makeRecord(name, level, NATIVE_PATH, 0, "%s", (message,), None, func=""))
            finally:
                span_id_var.reset(span_token)
                trace_id_var.reset(token)
