"""The options of ``[server:NAME]``, parsed by the one table.

The table is ``_core.SERVER_OPTIONS`` (``table()``) (generated from cpp/core/options.hpp):
every option's name, kind, default, range and doc line, and whether the
native core or the Python side reads it. Nothing here names an option's
default or range; docs/configuration.md is held to the same table by a test
(``markdown_table()`` renders the rows it must contain).
"""
from __future__ import annotations

import datetime
import difflib
import functools
import logging

from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional

from baseplate_serve import config
from baseplate_serve._errors import ConfigError

logger = logging.getLogger("baseplate_serve")


@functools.lru_cache(maxsize=None)
def table() -> List[Dict[str, Any]]:
    """One dict per option: key, kind, user ("core" or "python"), default,
    min, max (in the kind's unit: milliseconds for timespans), zero,
    default_text, choices, doc. Imports the native core on first use (an
    ImportError then is the caller's to report: the core does not load)."""
    from baseplate_serve import _core

    return list(_core.SERVER_OPTIONS)


def row_of(key: str) -> Dict[str, Any]:
    return next(row for row in table() if row["key"] == key)

#: Options of [server:NAME] that are not ours but are read by baseplate.py
#: 2.7 for its built-in server factories (baseplate/server/__init__.py,
#: wsgi.py, thrift.py, runtime_monitor.py): known, so never "unknown".
BASEPLATE_PY_OPTIONS: FrozenSet[str] = frozenset(
    {
        "factory",
        "monitoring.concurrency",
        "monitoring.connection_pool",
        "monitoring.gc.stats",
        "monitoring.gc.timing",
        "monitoring.gc.refcycle",
        "metrics.enabled",
    }
)


def known_options() -> FrozenSet[str]:
    return frozenset(row["key"] for row in table()) | BASEPLATE_PY_OPTIONS


class ServerOptions:
    """Parsed options: ``values`` keyed by INI name (ints in the table's
    unit, bools, strings, or None for an unset choice/text)."""

    def __init__(self, values: Dict[str, Any]) -> None:
        self.values = values

    @property
    def core(self) -> Dict[str, int]:
        """What ``_core.Server`` takes: exactly the core rows, as ints."""
        return {row["key"]: int(self.values[row["key"]]) for row in table() if row["user"] == "core"}

    def seconds(self, key: str) -> float:
        return self.values[key] / 1000.0

    @property
    def python_threads(self) -> int:
        return int(self.values["python_threads"])

    @property
    def drain_time(self) -> float:
        return self.seconds("drain_time")

    @property
    def stop_timeout(self) -> float:
        return self.seconds("stop_timeout")

    @property
    def blocked_hub(self) -> float:
        return self.seconds("monitoring.blocked_hub")

    @property
    def dispatch(self) -> Optional[str]:
        return self.values["dispatch"]


def _describe_range(row: Dict[str, Any]) -> str:
    low, high = _format(row, row["min"]), _format(row, row["max"])
    text = f"{low} to {high}"
    if row["zero"] and row["min"] == 0:
        text += f"; 0 = {row['zero']}"
    return text


def _format(row: Dict[str, Any], value: int) -> str:
    """A value in the table's unit, as it would be written in the INI."""
    if row["kind"] == "timespan":
        if value == 0:
            return "0"
        for unit, ms in (("hour", 3_600_000), ("minute", 60_000), ("second", 1000), ("millisecond", 1)):
            if value % ms == 0:
                count = value // ms
                return f"{count} {unit}{'' if count == 1 else 's'}"
    if row["kind"] == "flag":
        return "true" if value else "false"
    return str(value)


def _parse_one(row: Dict[str, Any], text: str) -> Any:
    """One value; raises ValueError with the message of the error line."""
    kind = row["kind"]
    text = text.strip()
    if kind == "text":
        return text or None
    if kind == "choice":
        choices = row["choices"].split()
        if not text:
            return None
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text
    if kind == "flag":
        try:
            return bool(config.Boolean(text))
        except ValueError:
            raise ValueError(f"{text!r} is not true or false") from None
    if kind == "timespan":
        try:
            span = config.TimespanWithLegacyFallback(text)
            value = span / datetime.timedelta(milliseconds=1)
        except (ValueError, OverflowError):
            # Not "could not convert string to float", which names no timespan.
            raise ValueError(
                f'invalid timespan {text!r} (e.g. "30 seconds", or a number of seconds)'
            ) from None
        if value != value:  # NaN
            raise ValueError(f"invalid timespan {text!r}")
        value = round(value)
    else:
        try:
            value = config.Integer(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if not row["min"] <= value <= row["max"]:
        raise ValueError(f"{text} is out of range ({_describe_range(row)})")
    return value


def parse_server_options(
    server_config: Mapping[str, str], filename: str, section: str, only: Optional[Iterable[str]] = None
) -> ServerOptions:
    """Every option of the table, from ``server_config`` or its default; a bad
    value is a ConfigError naming file, section and key (exit 2, one line).
    ``only``: read just these keys (the others keep their defaults), for a
    custom server factory whose other options are its own."""
    values: Dict[str, Any] = {}
    wanted = None if only is None else set(only)
    for row in table():
        key = row["key"]
        if key in server_config and server_config[key].strip() and (wanted is None or key in wanted):
            try:
                values[key] = _parse_one(row, server_config[key])
            except ValueError as exc:
                raise ConfigError.at(filename, section, key, str(exc)) from None
        elif row["kind"] in ("choice", "text"):
            values[key] = None
        else:
            values[key] = row["default"] if row["kind"] != "flag" else bool(row["default"])
    return ServerOptions(values)


def warn_unknown_options(server_config: Mapping[str, str], inherited: Iterable[str], section: str) -> None:
    """One WARNING naming every option of ``[section]`` that neither we nor
    baseplate.py read, each with the closest known name. Options inherited
    from [DEFAULT] are the app's too, so never unknown here."""
    known = known_options()
    skip = set(inherited)
    unknown = sorted(k for k in server_config if k not in known and k not in skip)
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        parts.append(f"{key} (did you mean {close[0]}?)" if close else key)
    logger.warning("[%s]: unknown options, ignored: %s", section, ", ".join(parts))


def resolve_dispatch(server_config: Mapping[str, str], filename: str, section: str) -> str:
    """``dispatch``: as configured, else gevent when it is importable, else threads."""
    try:
        value = _parse_one(row_of("dispatch"), server_config.get("dispatch", ""))
    except ValueError as exc:
        raise ConfigError.at(filename, section, "dispatch", str(exc)) from None
    if value is not None:
        if value == "gevent" and not _gevent_available():
            raise ConfigError.at(filename, section, "dispatch", "gevent is not installed (pip install gevent)")
        return str(value)
    return "gevent" if _gevent_available() else "threads"


def _gevent_available() -> bool:
    try:
        import gevent  # noqa: F401
    except ImportError:
        return False
    return True


#: Core options whose default the Python side chooses per server (the
#: core's own default, for hosts without Python, is the table's).
HOST_DEFAULTS = {"io_threads": "0 (inline I/O) under gevent dispatch; 1 with threads dispatch or a native app"}


def default_text(row: Dict[str, Any]) -> str:
    """The default as docs/configuration.md writes it."""
    if row["key"] in HOST_DEFAULTS:
        return HOST_DEFAULTS[row["key"]]
    if row["kind"] in ("choice", "text"):
        return row["default_text"]
    text = _format(row, row["default"])
    if row["default"] == 0 and row["zero"]:
        text += f" ({row['zero']})"
    return text


def range_text(row: Dict[str, Any]) -> str:
    """The values allowed, as docs/configuration.md writes them."""
    if row["kind"] == "choice":
        return ", ".join(row["choices"].split())
    if row["kind"] == "text":
        return "module:Class"
    if row["kind"] == "flag":
        return "true, false"
    return _describe_range(row)


def markdown_table() -> str:
    """The options table of docs/configuration.md, rendered from the table."""
    lines = ["| option | default | range | read by | meaning |", "| --- | --- | --- | --- | --- |"]
    for row in table():
        user = "core" if row["user"] == "core" else "Python"
        lines.append(f"| `{row['key']}` | `{default_text(row)}` | {range_text(row)} | {user} | {row['doc']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m baseplate_serve._options: the docs table
    print(markdown_table(), end="")
