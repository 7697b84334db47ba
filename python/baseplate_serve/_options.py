"""The options of ``[server:NAME]`` that the native core reads.

Every option, its default and its meaning is listed in
docs/configuration.md; the defaults here are the documented ones.
"""
from __future__ import annotations

import datetime

from typing import Any, Callable, Dict

from baseplate_serve import config
from baseplate_serve._errors import ConfigError


def _positive(parser: Callable[[str], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parser(text)
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    return parse


def _non_negative(parser: Callable[[str], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parser(text)
        if value < 0:
            raise ValueError("must not be negative")
        return value

    return parse


def _timespan(text: str) -> datetime.timedelta:
    try:
        return config.TimespanWithLegacyFallback(text)
    except ValueError:  # not "could not convert string to float", which names no timespan
        raise ValueError(f'invalid timespan {text.strip()!r} (e.g. "30 seconds", or a number of seconds)') from None


def _seconds(default: float) -> Any:
    return config.Optional(_timespan, default=datetime.timedelta(seconds=default))


def _ms(span: datetime.timedelta) -> int:
    return int(span.total_seconds() * 1000)


SPEC: Dict[str, Any] = {
    "max_concurrency": config.Optional(_positive(config.Integer), default=None),
    "stop_timeout": _seconds(0),
    # 0: no I/O thread, the gevent hub runs the I/O (inline; see _native.py).
    "io_threads": config.Optional(_non_negative(config.Integer), default=1),
    "python_threads": config.Optional(_positive(config.Integer), default=16),
    "header_timeout": _seconds(10),
    "keepalive_timeout": _seconds(60),
    "io_timeout": _seconds(60),
    "max_header_size": config.Optional(_positive(config.Integer), default=64 * 1024),
    "max_request_line": config.Optional(_non_negative(config.Integer), default=8 * 1024),
    "max_header_count": config.Optional(_non_negative(config.Integer), default=100),
    "max_pending_requests": config.Optional(_non_negative(config.Integer), default=1024),
    "max_body_size": config.Optional(_non_negative(config.Integer), default=1024 * 1024 * 1024),
    "max_frame_size": config.Optional(_positive(config.Integer), default=16 * 1024 * 1024),
    "drain_time": _seconds(0),
    "access_log": config.Optional(config.Boolean, default=False),
    "dispatch": config.Optional(config.OneOf(gevent="gevent", threads="threads"), default=None),
}


def resolve_dispatch(server_config: Dict[str, str], filename: str, section: str) -> str:
    """``dispatch``: as configured, else gevent when it is importable, else threads."""
    value = server_config.get("dispatch", "").strip()
    if value in ("gevent", "threads"):
        if value == "gevent" and not _gevent_available():
            raise ConfigError.at(filename, section, "dispatch", "gevent is not installed (pip install gevent)")
        return value
    if value:
        raise ConfigError.at(filename, section, "dispatch", f"{value!r} is not one of gevent, threads")
    return "gevent" if _gevent_available() else "threads"


def _gevent_available() -> bool:
    try:
        import gevent  # noqa: F401
    except ImportError:
        return False
    return True


def parse_server_options(server_config: Dict[str, str], filename: str, section: str) -> Dict[str, Any]:
    """Returns the core's options dict; a bad value is a ConfigError naming its key."""
    try:
        cfg = config.parse_config(server_config, SPEC)
    except config.ConfigurationError as exc:
        raise ConfigError.at(filename, section, exc.key, exc.error) from None
    options: Dict[str, Any] = {
        "io_threads": cfg.io_threads,
        "python_threads": cfg.python_threads,
        "stop_timeout_ms": _ms(cfg.stop_timeout),
        "header_timeout_ms": _ms(cfg.header_timeout),
        "keepalive_timeout_ms": _ms(cfg.keepalive_timeout),
        "io_timeout_ms": _ms(cfg.io_timeout),
        "max_header_size": cfg.max_header_size,
        "max_request_line": cfg.max_request_line,
        "max_header_count": cfg.max_header_count,
        "max_pending_requests": cfg.max_pending_requests,
        "max_body_size": cfg.max_body_size,
        "max_frame_size": cfg.max_frame_size,
        "drain_time_ms": _ms(cfg.drain_time),
        "access_log": cfg.access_log,
    }
    if cfg.dispatch is not None:
        options["dispatch"] = cfg.dispatch
    if cfg.max_concurrency is not None:
        options["max_concurrency"] = cfg.max_concurrency
    return options
